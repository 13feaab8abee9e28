import type { BrokerOptions } from "moleculer";

/**
 * Stock Moleculer under moleculer-runner, for the cold-start comparison: the runner fills namespace, nodeID and
 * transporter from the environment. Bare Moleculer has no readiness endpoint, so the node says when it started.
 */
const config: BrokerOptions = {
	logger: false,
	started() {
		process.stdout.write("BENCH-READY\n");
	}
};

export default config;
