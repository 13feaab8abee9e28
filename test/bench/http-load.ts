import { createRequire } from "node:module";

/** The part of autocannon's programmatic API the bench uses (the package ships no types). */
interface AutocannonOptions {
	url: string;
	connections: number;
	duration: number;
	pipelining?: number;
}

interface AutocannonResult {
	duration: number;
	errors: number;
	timeouts: number;
	non2xx: number;
	latency: { p50: number; p99: number };
	requests: { total: number };
}

type Autocannon = (opts: AutocannonOptions) => Promise<AutocannonResult>;

const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

export interface HttpLoadResult {
	rate: number;
	requests: number;
	errors: number;
	p50: number;
	p99: number;
}

/** Keeps `connections` HTTP/1.1 keep-alive connections busy with GETs for `seconds`. */
export async function httpLoad(url: string, connections: number, seconds: number): Promise<HttpLoadResult> {
	const r = await autocannon({ url, connections, duration: seconds, pipelining: 1 });
	return {
		rate: r.requests.total / r.duration,
		requests: r.requests.total,
		errors: r.errors + r.timeouts + r.non2xx,
		p50: r.latency.p50,
		p99: r.latency.p99
	};
}
