/**
 * Latency buckets, in seconds, shared by the node's own histograms and those services declare: 0.1 ms (a local
 * call or an L1 cache hit) to 10 s (the request timeout preset), so any two latency panels line up.
 */
export const DEFAULT_BUCKETS = [
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
];
