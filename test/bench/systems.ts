import type { BrokerOptions } from "moleculer";
import { buildConfig } from "../../moleculer.config.ts";
import { TEST_CLUSTER_KEY, TEST_JWT_SECRET } from "../support/cluster.ts";
import type { BrokerSpec, LatticeFeature } from "./protocol.ts";

/**
 * Broker options for the two systems under test. Lattice is its real config built from the environment a
 * production node would have; bare is stock Moleculer 0.15 with the least a user has to write.
 */
export function brokerOptions(spec: BrokerSpec): BrokerOptions {
	if (spec.kind === "nats") throw new Error("the NATS floor has no broker (roles/nats-floor.ts)");
	return spec.kind === "lattice" ? latticeOptions(spec) : bareOptions(spec);
}

/** The environment of a production Lattice node; only what production refuses to start without is added. */
export function latticeEnv(spec: Pick<BrokerSpec, "namespace" | "nodeID" | "transporter" | "redis" | "port">): Record<string, string> {
	const env: Record<string, string> = {
		NODE_ENV: "production",
		LOGLEVEL: "warn",
		NAMESPACE: spec.namespace,
		NODEID: spec.nodeID,
		LATTICE_OPS_PORT: "0",
		LATTICE_HOST: "127.0.0.1",
		PORT: String(spec.port ?? 0),
		LATTICE_CLUSTER_KEY: TEST_CLUSTER_KEY,
		LATTICE_JWT_SECRET: TEST_JWT_SECRET,
		// The limiter stays in the path, with a budget a benchmark from one address never exhausts.
		LATTICE_RATE_LIMIT: "100000000"
	};
	if (spec.transporter) env.TRANSPORTER = spec.transporter;
	if (spec.redis) env.CACHER = spec.redis;
	return env;
}

function latticeOptions(spec: BrokerSpec): BrokerOptions {
	const config = buildConfig(latticeEnv(spec));
	const options: BrokerOptions = {
		...config,
		serializer: spec.serializer ?? config.serializer,
		registry: { ...config.registry, strategy: spec.strategy ?? config.registry?.strategy }
	};
	for (const feature of spec.without ?? []) switchOff(options, feature);
	return options;
}

/** Names of the middleware objects in Lattice's config, in order (internal ones are listed by string). */
export function latticeMiddlewareNames(options: BrokerOptions): string[] {
	return (options.middlewares ?? []).flatMap(m => (typeof m === "object" && typeof m.name === "string" ? [m.name] : []));
}

/** Undoes one thing Lattice's config adds to stock Moleculer, so its cost can be measured alone. */
function switchOff(options: BrokerOptions, feature: LatticeFeature): void {
	switch (feature) {
		case "requestTimeout":
			options.requestTimeout = 0;
			return;
		case "bulkhead":
			options.bulkhead = { ...options.bulkhead, enabled: false };
			return;
		case "circuitBreaker":
			options.circuitBreaker = { ...options.circuitBreaker, enabled: false };
			return;
		case "tracking":
			options.tracking = { ...options.tracking, enabled: false };
			return;
		case "logger":
			options.logger = false;
			return;
	}
	const name = feature.slice("middleware:".length);
	const before = options.middlewares ?? [];
	options.middlewares = before.filter(m => typeof m !== "object" || m.name !== name);
	if (options.middlewares.length === before.length) throw new Error(`Lattice's config has no middleware named '${name}'`);
}

function bareOptions(spec: BrokerSpec): BrokerOptions {
	const options: BrokerOptions = {
		namespace: spec.namespace,
		nodeID: spec.nodeID,
		// The URL string exactly as a user would write it (Moleculer's typings list only transporter names).
		transporter: (spec.transporter ?? undefined) as BrokerOptions["transporter"],
		logger: false
	};
	// The stock Redis cacher; a TTL so an interrupted run does not leave keys in the shared Redis for good.
	if (spec.redis) {
		const url = new URL(spec.redis);
		options.cacher = { type: "Redis", options: { ttl: 120, redis: { host: url.hostname, port: Number(url.port || 6379) } } };
	}
	if (spec.serializer) options.serializer = spec.serializer;
	if (spec.strategy) options.registry = { strategy: spec.strategy };
	return options;
}
