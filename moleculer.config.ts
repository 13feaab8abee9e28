import os from "node:os";
import type { BrokerOptions } from "moleculer";
import { Registry } from "prom-client";
import { configError, ErrorType } from "./lib/errors.ts";
import { originMatcher, trustedProxies } from "./lib/http-security.ts";
import { JSONSerializer } from "./lib/json.serializer.ts";
import { defaultJwtSettings, jwtKeys, type JwtSettings } from "./lib/jwt-keys.ts";
import { LocalityStrategy } from "./lib/locality.strategy.ts";
import { pinoLoggerConfig } from "./lib/logger.ts";
import { redactedNodeInternals } from "./lib/redact.ts";
import { defaultSettings, type AuthSettings, type GatewaySettings, type LatticeSettings, type Topology } from "./lib/settings.ts";
import { DEFAULT_DISCOVERY_WAIT, LATTICE_NATS } from "./lib/nats.transporter.ts";
import type { ExporterSpec } from "./lib/trace-exporter.ts";
import { OTLP_PROTOCOLS, SAMPLERS } from "./lib/tracer.ts";
import { TwoLevelCacher } from "./lib/two-level.cacher.ts";
import { DEMO_USERS, parseUsers } from "./lib/users.ts";
import { AuthorizationMiddleware } from "./middlewares/authorization.middleware.ts";
import { DEFAULT_FAILOVER, FailoverMiddleware } from "./middlewares/failover.middleware.ts";
import { FaultInjectionMiddleware, parseFaultRules } from "./middlewares/fault-injection.middleware.ts";
import { parseTrafficRules, TrafficSplitMiddleware } from "./middlewares/traffic-split.middleware.ts";
import { DEFAULT_LOAD_SHEDDING, LoadSheddingMiddleware } from "./middlewares/load-shedding.middleware.ts";
import { DEFAULT_LOCALITY, LocalityMiddleware } from "./middlewares/locality.middleware.ts";
import { MetricsMiddleware } from "./middlewares/metrics.middleware.ts";
import { OpsServerMiddleware } from "./middlewares/ops-server.middleware.ts";
import { PacketProtectionMiddleware } from "./middlewares/packet-protection.middleware.ts";
import { TimeoutMiddleware } from "./middlewares/timeout.middleware.ts";
import { DEFAULT_PACKET_BATCHING, PacketBatchingMiddleware } from "./middlewares/packet-batching.middleware.ts";
import { BusPermissionsMiddleware } from "./middlewares/bus-permissions.middleware.ts";
import { TracingMiddleware, type TracingMiddlewareOptions } from "./middlewares/tracing.middleware.ts";
import { CIPHERS, parseClusterKey } from "./lib/packet-seal.ts";
import { natsAuthenticator } from "./lib/nats-auth.ts";
import { ChannelsMiddleware, DEFAULT_CHANNELS } from "./middlewares/channels.middleware.ts";

/**
 * Lattice's broker configuration. This is the only module that reads the environment: it turns it into typed
 * settings once, composes the middlewares, and hands services what they need through `broker.options.lattice`.
 *
 * `moleculer-runner --config moleculer.config.ts` calls the default export.
 */

type Env = Record<string, string | undefined>;

/**
 * Moleculer 0.15's internal middlewares, in its own order (service-broker.js, INTERNAL_MIDDLEWARES). "Timeout" is
 * taken by Lattice's own (middlewares/timeout.middleware.ts): same semantics, a fraction of the cost per call.
 */
const MOLECULER_MIDDLEWARES = [
	"ActionHook",
	"Validator",
	"Bulkhead",
	"Cacher",
	"ContextTracker",
	"CircuitBreaker",
	"Timeout",
	"Retry",
	"Fallback",
	"ErrorHandler",
	"Tracing",
	"Metrics",
	"Debounce",
	"Throttle"
];

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
		// Only server-side faults trip the breaker: a 4xx is the caller's problem, not the endpoint's. An overloaded
		// node still serves its capacity: opening on its 503s would push all of its traffic onto the other replicas.
		check: (err: { code?: number; type?: string }) => (!err.code || err.code >= 500) && err.type !== ErrorType.OVERLOADED
	},
	bulkhead: { enabled: true, concurrency: 64, maxQueueSize: 512 },
	tracking: { enabled: true, shutdownTimeout: 10_000 },
	// A stopping node first announces it has no services, then keeps serving this long before refusing requests:
	// requests peers sent before they processed that announcement still land (Moleculer's default is 100 ms).
	// Only a clustered node waits; without a transporter nobody needs telling.
	stopDelay: 500
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

function list(env: Env, name: string): string[] {
	return (env[name] ?? "").split(",").map(s => s.trim()).filter(Boolean);
}

/** LATTICE_RATE_LIMIT_REDIS, else the CACHER's Redis, so replicas share budgets wherever Redis is already there. */
function rateLimitRedis(env: Env): string | null {
	const spec = str(env, "LATTICE_RATE_LIMIT_REDIS", "");
	if (spec === "none" || spec === "memory") return null;
	if (spec) {
		if (!/^rediss?:\/\//.test(spec)) throw configError(`LATTICE_RATE_LIMIT_REDIS must be a redis:// URL, 'memory' or 'none', got '${spec}'`);
		return spec;
	}
	const cacher = str(env, "CACHER", "");
	return /^rediss?:\/\//.test(cacher) ? cacher : null;
}

function gatewayFrom(env: Env): GatewaySettings {
	const d = defaultSettings.gateway;
	const gateway: GatewaySettings = {
		port: int(env, "PORT", d.port),
		host: str(env, "LATTICE_HOST", d.host),
		bodyLimit: int(env, "LATTICE_BODY_LIMIT", d.bodyLimit, 1, 100 * 1024 * 1024),
		corsOrigins: list(env, "LATTICE_CORS_ORIGINS"),
		trustedProxies: list(env, "LATTICE_TRUSTED_PROXIES"),
		hstsMaxAge: int(env, "LATTICE_HSTS_MAX_AGE", d.hstsMaxAge, 0, 63_072_000),
		rateLimit: {
			limit: int(env, "LATTICE_RATE_LIMIT", d.rateLimit.limit, 0, 100_000_000),
			loginLimit: int(env, "LATTICE_LOGIN_RATE_LIMIT", d.rateLimit.loginLimit, 0, 100_000_000),
			windowMs: int(env, "LATTICE_RATE_LIMIT_WINDOW", d.rateLimit.windowMs / 1000, 1, 86_400) * 1000,
			redis: rateLimitRedis(env)
		}
	};
	// Fail at startup, not on the first request.
	trustedProxies(gateway.trustedProxies);
	originMatcher(gateway.corsOrigins.filter(o => o !== "*"));
	return gateway;
}

/** JWT keys and login accounts. In production there are no demo users and plaintext passwords are refused. */
function authFrom(env: Env, production: boolean): AuthSettings {
	const d = defaultJwtSettings;
	const jwt: JwtSettings = {
		secret: env.LATTICE_JWT_SECRET?.trim() || null,
		privateKey: env.LATTICE_JWT_PRIVATE_KEY?.trim() || null,
		publicKey: env.LATTICE_JWT_PUBLIC_KEY?.trim() || null,
		jwksUrl: env.LATTICE_JWT_JWKS_URL?.trim() || null,
		algorithms: env.LATTICE_JWT_ALGORITHMS?.trim() ? list(env, "LATTICE_JWT_ALGORITHMS") : [...d.algorithms],
		issuer: str(env, "LATTICE_JWT_ISSUER", d.issuer),
		audience: str(env, "LATTICE_JWT_AUDIENCE", d.audience),
		ttl: int(env, "LATTICE_JWT_TTL", d.ttl, 30, 86_400),
		clockTolerance: int(env, "LATTICE_JWT_CLOCK_TOLERANCE", d.clockTolerance, 0, 300)
	};
	// A configured key source is checked now (weak secret, bad PEM, two sources); a missing one only refuses to
	// start the services that need it (gateway, auth), so other nodes run without JWT keys.
	if (jwt.secret || jwt.privateKey || jwt.publicKey || jwt.jwksUrl) jwtKeys(jwt, production);
	const usersJson = env.LATTICE_USERS?.trim();
	const users = usersJson ? parseUsers(usersJson, production) : production ? [] : [...DEMO_USERS];
	return { jwt, users };
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
		pingInterval: 10_000,
		discoveryWait: { minMs: int(env, "LATTICE_DISCOVERY_WAIT", DEFAULT_DISCOVERY_WAIT.minMs, 0, DEFAULT_DISCOVERY_WAIT.maxMs) }
	};
	const authenticator = natsAuthenticator(env);
	if (authenticator) o.authenticator = authenticator;
	const tls = {
		caFile: env.LATTICE_NATS_TLS_CA,
		certFile: env.LATTICE_NATS_TLS_CERT,
		keyFile: env.LATTICE_NATS_TLS_KEY
	};
	if (!tls.certFile !== !tls.keyFile) throw configError("LATTICE_NATS_TLS_CERT and LATTICE_NATS_TLS_KEY go together");
	// An empty tls object still makes the client refuse a server that offers no TLS (tls:// URLs ask for that).
	if (tls.caFile || tls.certFile || url.startsWith("tls://")) {
		o.tls = Object.fromEntries(Object.entries(tls).filter(([, v]) => v));
	}
	return o;
}

/**
 * LATTICE_CLUSTER_KEY (and _PREVIOUS during a rollover) seal every packet; see middlewares/packet-protection.
 * A cluster without a key is refused in production and warned about loudly elsewhere.
 */
function packetProtectionFrom(env: Env, clustered: boolean, production: boolean, registry: Registry) {
	const key = str(env, "LATTICE_CLUSTER_KEY", "");
	const previous = str(env, "LATTICE_CLUSTER_KEY_PREVIOUS", "");
	if (!key && previous) throw configError("LATTICE_CLUSTER_KEY_PREVIOUS is set but LATTICE_CLUSTER_KEY is not");
	if (!key && clustered && production) {
		throw configError(
			"LATTICE_CLUSTER_KEY is required when TRANSPORTER is set and NODE_ENV=production: every node of the cluster " +
				"needs the same key to seal and open its packets (generate one with: openssl rand -base64 32)"
		);
	}
	return PacketProtectionMiddleware({
		keys: key
			? {
					current: parseClusterKey(key, "LATTICE_CLUSTER_KEY"),
					previous: previous ? parseClusterKey(previous, "LATTICE_CLUSTER_KEY_PREVIOUS") : null
				}
			: null,
		// Unset: the seal picks ChaCha20-Poly1305 when libsodium loads, else AES-256-GCM (lib/packet-seal.ts), and the
		// addon is only loaded on nodes that seal.
		cipher: env.LATTICE_CLUSTER_CIPHER?.trim() ? oneOf(env, "LATTICE_CLUSTER_CIPHER", CIPHERS, "aes-256-gcm") : undefined,
		maxSkewMs: int(env, "LATTICE_CLUSTER_MAX_SKEW", 30, 1, 3600) * 1000,
		registry
	});
}

/** Moleculer's typings list only its built-in transporter names; Lattice's NATS one is registered by name. */
type TransporterSpec = BrokerOptions["transporter"] | string | { type: typeof LATTICE_NATS; options: Record<string, unknown> };

function transporterFrom(env: Env): TransporterSpec {
	const spec = env.TRANSPORTER?.trim();
	if (!spec) return null;
	if (/^nats:\/\//.test(spec) || /^tls:\/\//.test(spec)) {
		return { type: LATTICE_NATS, options: natsOptions(env, spec) };
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

/** `k=v,k2=v2` with percent-encoded values, as OTEL_RESOURCE_ATTRIBUTES is written. */
function keyValues(env: Env, name: string): Record<string, string> {
	const out: Record<string, string> = {};
	for (const pair of list(env, name)) {
		const i = pair.indexOf("=");
		if (i <= 0) throw configError(`${name} must be a comma-separated list of key=value, got '${pair}'`);
		out[pair.slice(0, i).trim()] = decodeURIComponent(pair.slice(i + 1).trim());
	}
	return out;
}

/**
 * Tracing from the OpenTelemetry SDK variables. Trace context is always propagated and put in logs; spans are
 * exported only when an exporter is chosen, explicitly (OTEL_TRACES_EXPORTER) or by setting its endpoint.
 */
function tracingFrom(env: Env, registry: Registry): TracingMiddlewareOptions {
	const otlpTraces = str(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "");
	const otlpBase = str(env, "OTEL_EXPORTER_OTLP_ENDPOINT", "");
	const zipkin = str(env, "OTEL_EXPORTER_ZIPKIN_ENDPOINT", "");
	const implied = otlpTraces || otlpBase ? "otlp" : zipkin ? "zipkin" : "none";
	let kind = oneOf(env, "OTEL_TRACES_EXPORTER", ["otlp", "zipkin", "none"] as const, implied);
	if (str(env, "OTEL_SDK_DISABLED", "false") === "true") kind = "none";
	const timeout = int(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", int(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000, 1, 600_000), 1, 600_000);
	const protocol = oneOf(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", OTLP_PROTOCOLS, oneOf(env, "OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS, "http/protobuf"));
	const exporter: ExporterSpec | null =
		kind === "otlp"
			? { kind, url: otlpTraces || `${(otlpBase || "http://localhost:4318").replace(/\/+$/, "")}/v1/traces`, timeoutMillis: timeout, protocol }
			: kind === "zipkin"
				? { kind, url: zipkin || "http://localhost:9411/api/v2/spans" }
				: null;
	const ratio = Number(str(env, "OTEL_TRACES_SAMPLER_ARG", "1"));
	if (!(ratio >= 0 && ratio <= 1)) throw configError(`OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1, got '${env.OTEL_TRACES_SAMPLER_ARG}'`);
	return {
		exporter,
		sampler: oneOf(env, "OTEL_TRACES_SAMPLER", SAMPLERS, "parentbased_always_on"),
		ratio,
		serviceName: str(env, "OTEL_SERVICE_NAME", "lattice"),
		resourceAttributes: keyValues(env, "OTEL_RESOURCE_ATTRIBUTES"),
		batch: {
			scheduledDelayMillis: int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000, 1, 600_000),
			exportTimeoutMillis: int(env, "OTEL_BSP_EXPORT_TIMEOUT", 30_000, 1000, 600_000),
			maxQueueSize: int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1_000_000),
			maxExportBatchSize: int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1_000_000)
		},
		registry
	};
}

/**
 * Channels (reliable messaging) go on JetStream at LATTICE_CHANNELS_URL, else on a nats:// TRANSPORTER; `memory`,
 * or neither, keeps them in the process (not durable). Consumer receipts live in DATABASE_URL when there is one.
 */
function channelsFrom(env: Env, database: LatticeSettings["database"], registry: Registry) {
	const spec = str(env, "LATTICE_CHANNELS_URL", "");
	const transporter = str(env, "TRANSPORTER", "");
	const url = spec === "memory" ? null : spec || (/^(nats|tls):\/\//.test(transporter) ? transporter : null);
	if (url && !/^(nats|tls):\/\//.test(url)) throw configError(`LATTICE_CHANNELS_URL must be a nats:// or tls:// URL or 'memory', got '${url}'`);
	const d = DEFAULT_CHANNELS;
	let nats = null;
	if (url) {
		const { url: servers, ...rest } = natsOptions(env, url);
		nats = { ...rest, servers: servers as string, name: `${str(env, "NODEID", os.hostname())}-channels` };
	}
	return ChannelsMiddleware({
		nats,
		receipts: database.url ? { url: database.url, schema: database.schema } : null,
		maxAge: int(env, "LATTICE_CHANNELS_MAX_AGE", d.maxAge / 3_600_000, 1, 87_600) * 3_600_000,
		duplicateWindow: int(env, "LATTICE_CHANNELS_DUPLICATE_WINDOW", d.duplicateWindow / 1000, 1, 86_400) * 1000,
		replicas: int(env, "LATTICE_CHANNELS_REPLICAS", d.replicas, 1, 5),
		ackWait: int(env, "LATTICE_CHANNELS_ACK_WAIT", d.ackWait / 1000, 1, 3600) * 1000,
		registry
	});
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
		gateway: gatewayFrom(env),
		auth: authFrom(env, production),
		ops: { port: int(env, "LATTICE_OPS_PORT", defaultSettings.ops.port), host: str(env, "LATTICE_HOST", "0.0.0.0") },
		database: { url: env.DATABASE_URL?.trim() || null, schema: str(env, "LATTICE_DB_SCHEMA", "public") },
		facts: {
			hubDomain: str(env, "LATTICE_HUB_DOMAIN", defaultSettings.facts.hubDomain),
			sites: list(env, "LATTICE_FACT_SITES"),
			outboxMaxAge: int(env, "LATTICE_OUTBOX_MAX_AGE", defaultSettings.facts.outboxMaxAge / 3_600_000, 1, 87_600) * 3_600_000,
			outboxMaxBytes: int(env, "LATTICE_OUTBOX_MAX_MB", defaultSettings.facts.outboxMaxBytes / 1_048_576, 1, 1_048_576) * 1_048_576
		}
	};

	const metricsRegistry = new Registry();
	const metrics = MetricsMiddleware({ registry: metricsRegistry });
	const ops = OpsServerMiddleware({ port: lattice.ops.port, host: lattice.ops.host, registry: metricsRegistry });
	const nodeID = env.NODEID?.trim() || `${os.hostname().toLowerCase()}-${process.pid}`;
	const transporter = transporterFrom(env);
	const protection = packetProtectionFrom(env, transporter != null, production, metricsRegistry);
	const batching = PacketBatchingMiddleware({
		enabled: oneOf(env, "LATTICE_PACKET_BATCHING", ["true", "false"] as const, DEFAULT_PACKET_BATCHING.enabled ? "true" : "false") === "true",
		registry: metricsRegistry
	});
	const logLevel = str(env, "LOGLEVEL", "info");
	const shedding = LoadSheddingMiddleware({
		concurrency: int(env, "LATTICE_CONCURRENCY_LIMIT", DEFAULT_LOAD_SHEDDING.concurrency, 0, 1_000_000),
		maxQueue: int(env, "LATTICE_QUEUE_LIMIT", DEFAULT_LOAD_SHEDDING.maxQueue, 0, 1_000_000),
		maxQueueTime: int(env, "LATTICE_QUEUE_TIMEOUT", DEFAULT_LOAD_SHEDDING.maxQueueTime, 0, 600_000),
		registry: metricsRegistry
	});
	const failover = FailoverMiddleware({
		probeAfter: int(env, "LATTICE_PROBE_AFTER", DEFAULT_FAILOVER.probeAfter, 0, 600_000),
		probeTimeout: int(env, "LATTICE_PROBE_TIMEOUT", DEFAULT_FAILOVER.probeTimeout, 1, 600_000),
		registry: metricsRegistry
	});
	const strategy = oneOf(env, "LATTICE_STRATEGY", ["Locality", "RoundRobin", "Random", "CpuUsage", "Latency"] as const, "Locality");
	const locality = LocalityMiddleware({
		probeInterval: int(env, "LATTICE_SITE_PROBE_INTERVAL", DEFAULT_LOCALITY.probeInterval, 0, 600_000)
	});
	const faults = FaultInjectionMiddleware({ rules: parseFaultRules(env.LATTICE_FAULTS), registry: metricsRegistry });
	const traffic = TrafficSplitMiddleware({ rules: parseTrafficRules(env.LATTICE_TRAFFIC), registry: metricsRegistry });
	// This node's version label, which traffic rules split between (like a pod's `version` label under a mesh).
	const version = str(env, "LATTICE_VERSION", "");
	const tracing = TracingMiddleware(tracingFrom(env, metricsRegistry));
	const channels = channelsFrom(env, lattice.database, metricsRegistry);

	return {
		namespace,
		nodeID,
		metadata: { ...topology, ...(version ? { version } : {}) },
		transporter: transporter as BrokerOptions["transporter"],
		cacher: cacherFrom(env, namespace, metrics),
		serializer: new JSONSerializer(),
		logger: pinoLoggerConfig({ level: logLevel, pretty: !production }),
		logLevel,

		requestTimeout: presets.requestTimeout,
		heartbeatInterval: presets.heartbeatInterval,
		heartbeatTimeout: presets.heartbeatTimeout,
		retryPolicy: { ...presets.retryPolicy },
		circuitBreaker: { ...presets.circuitBreaker },
		bulkhead: { ...presets.bulkhead },
		tracking: { ...presets.tracking },
		// The locality strategy's first tier is this node, and Moleculer's preferLocal shortcut would bypass an action's
		// `require`/`within` rules, so it is off with that strategy.
		registry: {
			...(strategy === "Locality" ? { strategy: LocalityStrategy, preferLocal: false } : { strategy, preferLocal: true }),
			stopDelay: transporter ? presets.stopDelay : 0
		},
		// Broker-enforced mode: every call goes to its action's own NATS subject, so NATS permissions decide who
		// may call what (lib/nats-permissions.ts). NATS queue groups balance; strategies and preferLocal are off.
		disableBalancer: oneOf(env, "LATTICE_BROKER_ENFORCED", ["true", "false"] as const, "false") === "true",
		transit: { maxQueueSize: 50_000, disableReconnect: false },

		// Reject unknown fields instead of silently carrying them into handlers and databases.
		validator: { type: "Fastest", options: { defaults: { object: { strict: true } } } },

		// Lattice's prom-client registry replaces Moleculer's metrics module (its own HTTP server and a
		// ~10× cost on local calls): see middlewares/metrics.middleware.ts.
		metrics: false,
		tracing: false,

		// Moleculer registers user middlewares before its own and the first registered wraps the handler directly,
		// so listed plainly the metrics would sit inside the cacher, validator, bulkhead, breaker and timeout and
		// never count cache hits, rejected params, timeouts or rejections. Listing Moleculer's own here puts the
		// metrics outermost: they see every call the node answers.
		internalMiddlewares: false,
		// Authorization wraps outside the cacher and validator: a refused caller gets neither a cached answer nor a
		// validation message.
		// Packet protection first: for transporter hooks the first middleware is the one next to the wire. Batching
		// next to it, so whole batches are sealed and everything further out sees single packets.
		// Fault injection sits next to the handlers so an injected fault meets every protection a real one would;
		// load shedding sits just inside the metrics so refused requests are counted but cost nothing else.
		// Tracing comes after every middleware that wraps handlers, so its span and log correlation cover all they do.
		// Locality sits just outside Moleculer's own: refusing an action's require/within rule costs nothing else but is
		// still counted and traced.
		middlewares: [protection, batching, BusPermissionsMiddleware({ registry: metricsRegistry }), ops, failover, traffic, faults, ...MOLECULER_MIDDLEWARES.map(m => (m === "Timeout" ? TimeoutMiddleware() : m)), locality, AuthorizationMiddleware(), shedding, metrics, tracing, channels],

		// `$node.options` answers with credentials redacted (lib/redact.ts).
		internalServices: { $node: redactedNodeInternals() },

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
