import type { Redis } from "ioredis";
import type { ServiceBroker } from "moleculer";

/**
 * Stores for moleculer-web's `rateLimit`: fixed windows aligned to the wall clock (window n covers
 * [n·w, (n+1)·w)), so every gateway replica counts into the same window and agrees on when it resets.
 * moleculer-web calls `inc(key)` once per request and compares the count with the route's limit.
 */
export interface RateLimitStore {
	inc(key: string): Promise<number> | number;
	/** When the current window ends (ms since the epoch): the basis of Retry-After. */
	readonly resetTime: number;
	close(): Promise<void>;
}

export class MemoryRateLimitStore implements RateLimitStore {
	private readonly windowMs: number;
	private window = -1;
	private readonly hits = new Map<string, number>();

	constructor(windowMs: number) {
		this.windowMs = windowMs;
	}

	inc(key: string): number {
		const w = Math.floor(Date.now() / this.windowMs);
		if (w !== this.window) {
			this.window = w;
			this.hits.clear();
		}
		const n = (this.hits.get(key) ?? 0) + 1;
		this.hits.set(key, n);
		return n;
	}

	get resetTime(): number {
		return (Math.floor(Date.now() / this.windowMs) + 1) * this.windowMs;
	}

	async close(): Promise<void> {
		this.hits.clear();
	}
}

interface WarnLogger {
	warn(...args: unknown[]): void;
}

export interface RedisRateLimitOptions {
	url: string;
	/** Key prefix; include the namespace so clusters sharing a Redis keep separate budgets. */
	prefix: string;
	logger?: WarnLogger;
}

/**
 * One counter per client and window in Redis (INCR, expiring after the window), shared by every replica.
 * While Redis is unreachable each replica falls back to counting in memory — the limit then holds per replica
 * instead of cluster-wide — rather than failing requests or letting them through uncounted.
 */
export class RedisRateLimitStore implements RateLimitStore {
	private readonly windowMs: number;
	private readonly prefix: string;
	private redis: Redis | null = null;
	private closed = false;
	private readonly fallback: MemoryRateLimitStore;
	private readonly logger: WarnLogger | undefined;
	private readonly connected: Promise<void>;
	private warnedWindow = -1;

	constructor(windowMs: number, opts: RedisRateLimitOptions) {
		this.windowMs = windowMs;
		this.prefix = opts.prefix;
		this.logger = opts.logger;
		this.fallback = new MemoryRateLimitStore(windowMs);
		// Requests arriving while the first connection is being made wait for it (up to the connect timeout)
		// rather than being counted apart from the other replicas.
		this.connected = this.connect(opts.url);
	}

	/** ioredis is imported here, so gateways that count in memory never load it. */
	private async connect(url: string): Promise<void> {
		const { Redis } = await import("ioredis");
		if (this.closed) return;
		// No offline queue and one attempt: a request must never wait on a Redis that is away.
		const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 2_000 });
		redis.on("error", err => this.warnOnce(`Rate limit store: Redis error (${err.message}); counting in memory meanwhile`));
		this.redis = redis;
		await new Promise(resolve => {
			redis.once("ready", resolve);
			redis.once("end", resolve);
			setTimeout(resolve, 2_000).unref();
		});
	}

	async inc(key: string): Promise<number> {
		await this.connected;
		const w = Math.floor(Date.now() / this.windowMs);
		const k = `${this.prefix}${w}:${key}`;
		try {
			if (!this.redis) throw new Error("store closed");
			const res = await this.redis.multi().incr(k).pexpire(k, this.windowMs + 1_000).exec();
			const [err, count] = res?.[0] ?? [new Error("empty MULTI reply"), null];
			if (err) throw err;
			return count as number;
		} catch (err) {
			this.warnOnce(`Rate limit store: Redis unavailable (${(err as Error).message}); counting in memory meanwhile`);
			return this.fallback.inc(key);
		}
	}

	get resetTime(): number {
		return (Math.floor(Date.now() / this.windowMs) + 1) * this.windowMs;
	}

	async close(): Promise<void> {
		this.closed = true;
		await this.fallback.close();
		this.redis?.disconnect();
	}

	/** At most one warning per window, so an outage under load does not flood the logs. */
	private warnOnce(message: string): void {
		const w = Math.floor(Date.now() / this.windowMs);
		if (w === this.warnedWindow) return;
		this.warnedWindow = w;
		this.logger?.warn(message);
	}
}

export type RateLimitStoreFactory = new (windowMs: number, routeOptions: unknown, broker: ServiceBroker) => RateLimitStore;

/** A `StoreFactory` for moleculer-web: Redis when a URL is given, memory otherwise. */
export function rateLimitStoreFactory(redisUrl: string | null, prefix: string): RateLimitStoreFactory {
	if (!redisUrl) {
		return class extends MemoryRateLimitStore {
			constructor(windowMs: number) {
				super(windowMs);
			}
		};
	}
	const url: string = redisUrl;
	return class extends RedisRateLimitStore {
		constructor(windowMs: number, _route: unknown, broker: ServiceBroker) {
			super(windowMs, { url, prefix, logger: broker.getLogger("rate-limit") });
		}
	};
}
