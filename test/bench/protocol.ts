/**
 * What the orchestrator and its child processes say to each other over the fork IPC channel: the spec a child
 * is started with, and the request/reply pairs it answers.
 */

/** `nats`: no framework, request/reply straight on nats.js (roles/nats-floor.ts), the floor the other two stand on. */
export type SystemKind = "lattice" | "bare" | "nats";
export type SerializerName = "JSON" | "CBOR" | "MsgPack" | "Notepack";
export type StrategyName = "RoundRobin" | "Latency" | "CpuUsage";
/** The broker options Lattice's config sets that a bench can switch off (the overhead suite, one at a time). */
export const BROKER_OPTION_FEATURES = ["requestTimeout", "bulkhead", "circuitBreaker", "tracking", "logger"] as const;
/** A part of Lattice's config to switch off: one of those broker options, or a middleware by name. */
export type LatticeFeature = (typeof BROKER_OPTION_FEATURES)[number] | `middleware:${string}`;

/** How one broker of a benchmarked system is configured. */
export interface BrokerSpec {
	kind: SystemKind;
	namespace: string;
	nodeID: string;
	/** NATS URL; null for a single-process (local) broker. */
	transporter: string | null;
	/** Redis URL for the cacher; absent means the system's default (Lattice: in-process; bare: none). */
	redis?: string;
	serializer?: SerializerName;
	strategy?: StrategyName;
	/** Lattice only: features to switch off. */
	without?: LatticeFeature[];
	/** HTTP port, for gateway processes. */
	port?: number;
}

export type RoleName = "server" | "client" | "gateway";

/** Request parameters for each call of a run: one fixed body, a small set of repeating ids, or always new ids. */
export type ParamsSpec =
	| { kind: "fixed"; value: unknown }
	| { kind: "cycle"; keys: number }
	| { kind: "unique"; prefix: string };

export interface ClosedLoopSpec {
	action: string;
	params: ParamsSpec;
	concurrency: number;
	warmupMs: number;
	durationMs: number;
}

export interface OpenLoopSpec {
	action: string;
	params: ParamsSpec;
	/** Calls per second, sent on a fixed schedule whatever the replies do. */
	rate: number;
	warmupMs: number;
	durationMs: number;
}

/** One client run. Latencies in milliseconds. */
export interface LoadResult {
	calls: number;
	errors: number;
	seconds: number;
	rate: number;
	mean: number;
	p50: number;
	p90: number;
	p99: number;
	max: number;
	/** Client CPU (user + system) per completed call, in microseconds. */
	clientCpuUsPerCall: number;
	/** Open loop only: p99 of how late a call left against its schedule, in milliseconds. */
	sendLagP99?: number;
}

export interface ServerStats {
	/** Calls the bench actions' handlers ran (cache hits never get here). */
	handled: number;
	/** process.cpuUsage() user + system, in microseconds. */
	cpuUs: number;
}

/** Request name → [argument, reply]. */
export interface Ops {
	closed: [ClosedLoopSpec, LoadResult];
	open: [OpenLoopSpec, LoadResult];
	stats: [null, ServerStats];
	/** Waits until `count` endpoints serve the action (replicas discovered). */
	endpoints: [{ action: string; count: number }, number];
}

export type OpName = keyof Ops;

export interface RequestMessage<K extends OpName = OpName> {
	type: "request";
	id: number;
	op: K;
	arg: Ops[K][0];
}

export type ChildMessage =
	| { type: "ready" }
	| { type: "reply"; id: number; ok: true; value: unknown }
	| { type: "reply"; id: number; ok: false; error: string };

export const BENCH_SERVICE = "bench";

/** The routes both gateways serve (under their `/api` route). */
export const HELLO_PATH = "/api/hello";
export const PRODUCTS_PATH = "/api/products";
