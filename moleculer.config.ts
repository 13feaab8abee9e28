import os from "node:os";
import type { BrokerOptions } from "moleculer";
import { Registry } from "prom-client";
import { configError } from "./lib/errors.ts";
import { pinoLoggerConfig } from "./lib/logger.ts";
import { defaultSettings, type LatticeSettings, type Topology } from "./lib/settings.ts";
import { TwoLevelCacher } from "./lib/two-level.cacher.ts";
import { MetricsMiddleware } from "./middlewares/metrics.middleware.ts";
import { OpsServerMiddleware } from "./middlewares/ops-server.middleware.ts";

/**
 * Lattice's broker configuration. This is the only module that reads the environment: it turns it into typed
 * settings once, composes the middlewares, and hands services what they need through `broker.options.lattice`.
 *
 * `moleculer-runner --config moleculer.config.ts` calls the default export.
 */

type Env = Record<string, string | undefined>;

/** Fault-tolerance presets; every one can still be overridden with MOL_* variables (e.g. MOL_REQUEST_TIMEOUT). */
export const presets = {
	requestTimeout: 10_000,
	heartbeatInterval: 5,
	heartbeatTimeout: 15,
	retryPolicy: {
		// Off unless an action declares `retryPolicy: { enabled: true }`: only the action knows it is idempotent.
		enabled: false,
		retries: 3,
		delay: 50,
		maxDelay: 1000,
		factor: 2
	},
	circuitBreaker: {
		enabled: true,
		threshold: 0.5,
		minRequestCount: 20,
		windowTime: 60,
		halfOpenTime: 10_000,
		// Only server-side faults trip the breaker: a 4xx is the caller's problem, not the endpoint's.
		check: (err: { code?: number }) => !err.code || err.code >= 500
	},
	bulkhead: { enabled: true, concurrency: 64, maxQueueSize: 512 },
	tracking: { enabled: true, shutdownTimeout: 10_000 }
} as const;

function str(env: Env, name: string, fallback: string): string {
	const v = env[name];
	return v === undefined || v.trim() === "" ? fallback : v.trim();
}

function int(env: Env, name: string, fallback: number, min = 0, max = 65_535): number {
	const raw = env[name];
	if (raw === undefined || raw.trim() === "") return fallback;
	const n = Number(raw);
	if (!Number.isInteger(n) || n < min || n > max) {
		throw configError(`${name} must be an integer between ${min} and ${max}, got '${raw}'`, { name, value: raw });
	}
	return n;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
	const v = str(env, name, fallback) as T;
	if (!allowed.includes(v)) throw configError(`${name} must be one of ${allowed.join(", ")}, got '${v}'`);
	return v;
}

/** `none`/`false` turn caching off; an empty value means the in-process cache. */
function cacherFrom(env: Env, namespace: string, metrics: ReturnType<typeof MetricsMiddleware>): TwoLevelCacher | null {
	const spec = str(env, "CACHER", "memory");
	if (spec === "none" || spec === "false") return null;
	const common = {
		max: int(env, "LATTICE_CACHE_MAX", 5000, 0, 10_000_000),
		ttl: int(env, "LATTICE_CACHE_TTL", 300, 1, 31_536_000),
		l1MaxTtl: int(env, "LATTICE_CACHE_L1_TTL", 30, 1, 31_536_000),
		prefix: `lattice-${namespace || "default"}-`,
		onLookup: metrics.recordCacheLookup
	};
	if (spec === "memory" || spec === "Memory" || spec === "MemoryLRU") return new TwoLevelCacher(common);
	if (/^rediss?:\/\//.test(spec)) return new TwoLevelCacher({ ...common, redis: spec });
	throw configError(`CACHER must be empty, 'memory', 'none' or a redis:// URL, got '${spec}'`);
}

/** NATS connection options from LATTICE_NATS_* (credentials never go in the URL that ends up in logs). */
function natsOptions(env: Env, url: string): Record<string, unknown> {
	const o: Record<string, unknown> = {
		url,
		name: env.NODEID,
		maxReconnectAttempts: -1,
		reconnectTimeWait: 500,
		pingInterval: 10_000
	};
	if (env.LATTICE_NATS_USER) {
		o.user = env.LATTICE_NATS_USER;
		o.pass = env.LATTICE_NATS_PASSWORD ?? "";
	}
	if (env.LATTICE_NATS_TOKEN) o.token = env.LATTICE_NATS_TOKEN;
	const tls = {
		caFile: env.LATTICE_NATS_TLS_CA,
		certFile: env.LATTICE_NATS_TLS_CERT,
		keyFile: env.LATTICE_NATS_TLS_KEY
	};
	if (tls.caFile || tls.certFile) o.tls = Object.fromEntries(Object.entries(tls).filter(([, v]) => v));
	return o;
}

function transporterFrom(env: Env): BrokerOptions["transporter"] | string {
	const spec = env.TRANSPORTER?.trim();
	if (!spec) return null;
	if (/^nats:\/\//.test(spec) || /^tls:\/\//.test(spec)) {
		return { type: "NATS", options: natsOptions(env, spec) };
	}
	// Any other Moleculer transporter string (e.g. "TCP") is passed through untouched.
	return spec;
}

/**
 * `SERVICES=api,products` is moleculer-runner's shorthand, but the runner expands a bare name to
 * `<name>.service.js` only; Lattice's services are `.ts`. Rewrites bare names to files the runner can load.
 */
export function expandServices(services: string | undefined, serviceDir: string | undefined): string | undefined {
	if (!services) return services;
	const dir = serviceDir ? "" : "services/";
	return services
		.split(",")
		.map(s => s.trim())
		.filter(Boolean)
		.map(s => {
			const skip = s.startsWith("!") ? "!" : "";
			const name = skip ? s.slice(1) : s;
			return /^[\w-]+$/.test(name) ? `${skip}${dir}${name}.service.ts` : s;
		})
		.join(",");
}

export interface LatticeConfig extends BrokerOptions {
	lattice: LatticeSettings;
	metricsRegistry: Registry;
}

export function buildConfig(env: Env): LatticeConfig {
	const production = env.NODE_ENV === "production";
	const namespace = str(env, "NAMESPACE", "");
	const topology: Topology = {
		region: str(env, "LATTICE_REGION", defaultSettings.topology.region),
		zone: str(env, "LATTICE_ZONE", defaultSettings.topology.zone),
		site: str(env, "LATTICE_SITE", defaultSettings.topology.site),
		role: oneOf(env, "LATTICE_ROLE", ["cloud", "edge"] as const, "cloud")
	};
	const lattice: LatticeSettings = {
		production,
		topology,
		gateway: { port: int(env, "PORT", defaultSettings.gateway.port), host: str(env, "LATTICE_HOST", "0.0.0.0") },
		ops: { port: int(env, "LATTICE_OPS_PORT", defaultSettings.ops.port), host: str(env, "LATTICE_HOST", "0.0.0.0") },
		databaseUrl: env.DATABASE_URL?.trim() || null
	};

	const metricsRegistry = new Registry();
	const metrics = MetricsMiddleware({ registry: metricsRegistry });
	const ops = OpsServerMiddleware({ port: lattice.ops.port, host: lattice.ops.host, registry: metricsRegistry });
	const nodeID = env.NODEID?.trim() || `${os.hostname().toLowerCase()}-${process.pid}`;
	const logLevel = str(env, "LOGLEVEL", "info");

	return {
		namespace,
		nodeID,
		metadata: { ...topology },
		transporter: transporterFrom(env) as BrokerOptions["transporter"],
		cacher: cacherFrom(env, namespace, metrics),
		serializer: "JSON",
		logger: pinoLoggerConfig({ level: logLevel, pretty: !production }),
		logLevel,

		requestTimeout: presets.requestTimeout,
		heartbeatInterval: presets.heartbeatInterval,
		heartbeatTimeout: presets.heartbeatTimeout,
		retryPolicy: { ...presets.retryPolicy },
		circuitBreaker: { ...presets.circuitBreaker },
		bulkhead: { ...presets.bulkhead },
		tracking: { ...presets.tracking },
		registry: { strategy: "RoundRobin", preferLocal: true },
		transit: { maxQueueSize: 50_000, disableReconnect: false },

		// Reject unknown fields instead of silently carrying them into handlers and databases.
		validator: { type: "Fastest", options: { defaults: { object: { strict: true } } } },

		// Lattice's prom-client registry replaces Moleculer's metrics module (its own HTTP server and a
		// ~10× cost on local calls): see middlewares/metrics.middleware.ts.
		metrics: false,
		tracing: false,

		middlewares: [ops, metrics],

		lattice,
		metricsRegistry
	} as LatticeConfig;
}

/**
 * Entry point for moleculer-runner. Besides building the config it claims TRANSPORTER and CACHER from the
 * environment: the runner would otherwise overwrite the objects built here with the raw strings (it applies
 * every UPPERCASE variable matching a config key after loading the file), losing reconnect, auth and the
 * two-level cacher.
 */
export default function config(): LatticeConfig {
	const env = process.env;
	const built = buildConfig(env);
	delete env.TRANSPORTER;
	delete env.CACHER;
	const services = expandServices(env.SERVICES, env.SERVICEDIR);
	if (services !== undefined) env.SERVICES = services;
	return built;
}
