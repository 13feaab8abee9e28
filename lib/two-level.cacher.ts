import { Cachers, Utils, type Context, type ServiceBroker, type ActionSchema } from "moleculer";
import { LRUCache } from "lru-cache";
import type { Redis, RedisOptions } from "ioredis";

export type CacheOutcome = "l1" | "l2" | "miss" | "l2_error";

export interface TwoLevelCacherOptions {
	/** Entries kept in process (L1). Default 5,000. */
	max?: number;
	/** Default TTL in seconds for both levels; an action's `cache.ttl` overrides it. Default 300. */
	ttl?: number;
	/**
	 * Upper bound in seconds for an L1 entry. Cross-node invalidation is a broadcast: one a node misses while
	 * disconnected is covered by dropping L1 on reconnect, and this bounds whatever else slips through. Default 30.
	 */
	l1MaxTtl?: number;
	/** Redis URL or ioredis options for the shared L2; null keeps the cache in process only. */
	redis?: string | RedisOptions | null;
	/** Key prefix; default `lattice-<namespace>-`, so namespaces sharing a Redis never see each other's entries. */
	prefix?: string;
	/** Redis command timeout in ms: a slow or dead Redis costs a miss, never a hung request. Default 250. */
	redisTimeout?: number;
	/** Called once per cached-action lookup, for metrics. */
	onLookup?: (outcome: CacheOutcome) => void;
}

/** Broadcast to every node when a node cleans entries, so the others drop them from their L1. */
export const CACHE_CLEAN_EVENT = "$lattice.cache.clean";

interface CacheActionOptions {
	ttl?: number;
	keys?: string[];
	keygen?: unknown;
	enabled?: boolean | ((ctx: Context) => boolean);
}

type Handler = (ctx: Context) => Promise<unknown>;

/**
 * Two-level cacher: a bounded in-process LRU (L1) in front of Redis (L2).
 *
 * Moleculer's stock cacher only wraps the serving node's handler, so a hit still crosses NATS and then adds a
 * Redis round trip: slower than no cache for a cheap action. This one also wraps the caller's side of a remote
 * call, so a repeated read is answered from the caller's own memory without touching the network. Writes clean
 * both levels and broadcast the pattern so every node drops it from its L1. Concurrent misses for one key on one
 * node share a single handler call (the stampede lock), and any Redis failure degrades to a miss.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export class TwoLevelCacher extends Cachers.Base<any> {
	private l1!: LRUCache<string, { v: unknown }>;
	private redis: Redis | null = null;
	private closed = false;
	private readonly inflight = new Map<string, Promise<unknown>>();
	/** Bumped by every clean; a fill that started before a clean is not stored (it may hold the old value). */
	private generation = 0;
	private readonly settings: Required<Omit<TwoLevelCacherOptions, "redis" | "prefix" | "onLookup">> &
		TwoLevelCacherOptions;

	constructor(opts: TwoLevelCacherOptions = {}) {
		super({ ...opts, missingResponse: undefined });
		this.settings = { max: 5000, ttl: 300, l1MaxTtl: 30, redisTimeout: 250, ...opts };
	}

	override init(broker: ServiceBroker): void {
		super.init(broker);
		const s = this.settings;
		this.prefix = s.prefix ?? `lattice-${broker.namespace || "default"}-`;
		this.l1 = new LRUCache({ max: s.max, ttl: s.l1MaxTtl * 1000, ttlAutopurge: false });
		this.connected = true;

		broker.createService({
			name: "$lattice-cache",
			events: {
				[CACHE_CLEAN_EVENT]: {
					handler: (ctx: Context<{ match: string[] }>) => {
						if (ctx.nodeID !== broker.nodeID) this.cleanL1(ctx.params.match);
					}
				}
			}
		});
		// Invalidations broadcast while this node was cut off never arrived.
		broker.localBus.on("$transporter.connected", () => this.cleanL1(["**"]));
	}

	/**
	 * Makes the L2 client when the broker starts and connects it in the background: a node starts and serves even
	 * when Redis is down. ioredis is imported here, so nodes without an L2 never load it.
	 */
	async connect(): Promise<void> {
		const s = this.settings;
		if (!s.redis) return;
		const { Redis } = await import("ioredis");
		if (this.closed) return;
		const base: RedisOptions = {
			// Fail fast while Redis is away instead of queueing commands until it returns.
			enableOfflineQueue: false,
			maxRetriesPerRequest: 0,
			commandTimeout: s.redisTimeout,
			lazyConnect: true,
			retryStrategy: times => Math.min(times * 200, 2000)
		};
		const redis = typeof s.redis === "string" ? new Redis(s.redis, base) : new Redis({ ...base, ...s.redis });
		redis.on("error", err => this.logger.debug("Redis L2 error", err.message));
		redis.on("ready", () => {
			this.connected = true;
			this.logger.info("Redis L2 connected");
		});
		redis.on("end", () => (this.connected = false));
		this.redis = redis;
		redis.connect().catch(err => this.logger.warn("Redis L2 unavailable, serving from L1 and handlers", err.message));
	}

	override close(): Promise<void> {
		this.closed = true;
		this.l1?.clear();
		const redis = this.redis;
		if (!redis) return Promise.resolve();
		// quit() only works on a live connection; disconnect() also cancels pending reconnect attempts.
		if (redis.status !== "ready") {
			redis.disconnect();
			return Promise.resolve();
		}
		return redis.quit().then(
			() => undefined,
			() => redis.disconnect()
		);
	}

	override middleware() {
		return {
			name: "Cacher",
			starting: () => this.connect(),
			localAction: (handler: Handler, action: ActionSchema) => this.wrap(handler, action, true),
			remoteAction: (handler: Handler, action: ActionSchema) => this.wrap(handler, action, false)
		};
	}

	private wrap(handler: Handler, action: ActionSchema, local: boolean): Handler {
		const raw = action.cache;
		if (!raw) return handler;
		const opts: CacheActionOptions = typeof raw === "object" ? raw : {};
		if (opts.enabled === false) return handler;
		const enabledFn = typeof opts.enabled === "function" ? opts.enabled : null;
		const ttl = opts.ttl ?? this.settings.ttl;
		const l1Ttl = Math.min(ttl, this.settings.l1MaxTtl) * 1000;
		const onLookup = this.settings.onLookup;

		return (ctx: Context) => {
			if ((ctx.meta as { $cache?: boolean }).$cache === false) return handler(ctx);
			if (enabledFn && !enabledFn.call(ctx.service, ctx)) return handler(ctx);

			const key = this.getCacheKey(action as never, opts, ctx);
			const hit = this.l1.get(key);
			if (hit !== undefined) {
				ctx.cachedResult = true;
				onLookup?.("l1");
				return Promise.resolve(hit.v);
			}
			const generation = this.generation;
			if (!local) {
				// Caller side: remember the answer so the next identical call stays in this process.
				return handler(ctx).then(result => {
					if (generation === this.generation) this.l1.set(key, { v: result }, { ttl: l1Ttl });
					return result;
				});
			}
			const pending = this.inflight.get(key);
			if (pending) return pending;
			const p = this.readThrough(ctx, key, handler, ttl, l1Ttl, generation).finally(() =>
				this.inflight.delete(key)
			);
			this.inflight.set(key, p);
			return p;
		};
	}

	private async readThrough(
		ctx: Context,
		key: string,
		handler: Handler,
		ttl: number,
		l1Ttl: number,
		generation: number
	): Promise<unknown> {
		const onLookup = this.settings.onLookup;
		if (this.redis) {
			const found = await this.l2get(key);
			if (found !== undefined) {
				ctx.cachedResult = true;
				onLookup?.("l2");
				if (generation === this.generation) this.l1.set(key, { v: found }, { ttl: l1Ttl });
				return found;
			}
		}
		onLookup?.("miss");
		const result = await handler(ctx);
		if (generation === this.generation) {
			this.l1.set(key, { v: result }, { ttl: l1Ttl });
			if (this.redis) void this.l2set(key, result, ttl);
		}
		return result;
	}

	private async l2get(key: string): Promise<unknown> {
		try {
			const raw = await this.redis!.get(this.prefix + key);
			return raw == null ? undefined : JSON.parse(raw);
		} catch {
			this.settings.onLookup?.("l2_error");
			return undefined;
		}
	}

	private async l2set(key: string, value: unknown, ttl: number): Promise<void> {
		if (value === undefined) return;
		try {
			await this.redis!.set(this.prefix + key, JSON.stringify(value), "EX", ttl);
		} catch {
			// L2 is an optimisation: the value is in L1 and the handler remains the source of truth.
		}
	}

	override async get(key: string): Promise<Record<string, unknown> | null> {
		const hit = this.l1.get(key);
		if (hit !== undefined) return hit.v as Record<string, unknown>;
		if (!this.redis) return null;
		const found = await this.l2get(key);
		return (found ?? null) as Record<string, unknown> | null;
	}

	override async getWithTTL(key: string): Promise<Record<string, unknown> | null> {
		return { data: await this.get(key), ttl: null };
	}

	override async set(key: string, data: unknown, ttl?: number): Promise<void> {
		const t = ttl ?? this.settings.ttl;
		this.l1.set(key, { v: data }, { ttl: Math.min(t, this.settings.l1MaxTtl) * 1000 });
		if (this.redis) await this.l2set(key, data, t);
	}

	override async del(keys: string | string[]): Promise<void> {
		const list = Array.isArray(keys) ? keys : [keys];
		this.generation++;
		for (const k of list) this.l1.delete(k);
		if (this.redis) await this.redis.del(...list.map(k => this.prefix + k)).catch(() => 0);
		this.announce(list);
	}

	/** Cleans matching entries on both levels here and broadcasts the patterns to every other node's L1. */
	override async clean(match: string | string[] = "**"): Promise<void> {
		const patterns = Array.isArray(match) ? match : [match];
		this.cleanL1(patterns);
		if (this.redis) await Promise.all(patterns.map(p => this.cleanL2(p))).catch(() => undefined);
		this.announce(patterns);
	}

	private announce(patterns: string[]): void {
		if (this.broker.transit) void this.broker.broadcast(CACHE_CLEAN_EVENT, { match: patterns });
	}

	private cleanL1(patterns: string[]): void {
		this.generation++;
		if (patterns.includes("**")) {
			this.l1.clear();
			return;
		}
		for (const key of this.l1.keys()) {
			if (patterns.some(p => Utils.match(key, p))) this.l1.delete(key);
		}
	}

	private cleanL2(pattern: string): Promise<void> {
		const redis = this.redis!;
		return new Promise((resolve, reject) => {
			const stream = redis.scanStream({ match: this.prefix + pattern.replace(/\*\*/g, "*"), count: 200 });
			const deletes: Promise<unknown>[] = [];
			stream.on("data", (keys: string[]) => {
				if (keys.length > 0) deletes.push(redis.del(...keys));
			});
			stream.on("error", reject);
			stream.on("end", () => Promise.all(deletes).then(() => resolve(), reject));
		});
	}

	override tryLock(): Promise<() => Promise<void>> {
		// Stampedes are absorbed by the per-key in-flight map; a lock object is kept for API compatibility.
		return Promise.resolve(() => Promise.resolve());
	}

	override lock(): Promise<() => Promise<void>> {
		return this.tryLock();
	}

	override getCacheKeys(): Promise<Array<{ key: string }>> {
		return Promise.resolve([...this.l1.keys()].map(key => ({ key })));
	}
}
