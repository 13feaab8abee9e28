import { LRUCache } from "lru-cache";
import type pg from "pg";
import { acquirePool, ensureTables, ident, releasePool } from "../pg.ts";

/**
 * Receipts make consumers idempotent: a group runs its handler at most once to completion per message id.
 * A member claims the id before running the handler (a lease, so a member that dies mid-handler does not keep
 * it), marks it done after the handler succeeded, or releases it when the handler failed.
 *
 * The one window left: a member that dies after its handler's effect but before the receipt is written. The
 * message then runs again. Handlers that write to the same PostgreSQL can close it by keying their own effect
 * on `msg.id`.
 */
export type Claim = "claimed" | "done" | "busy";

export interface ReceiptStore {
	/** Durable receipts survive the process (and are shared by the group's members on every node). */
	readonly durable: boolean;
	claim(group: string, id: string, leaseMs: number): Promise<Claim>;
	complete(group: string, id: string): Promise<void>;
	release(group: string, id: string): Promise<void>;
	close(): Promise<void>;
}

interface Receipt {
	done: boolean;
	leaseUntil: number;
}

/** Receipts in the process's memory, the last `max` ids per process: for the in-process fallback and tests. */
export class MemoryReceipts implements ReceiptStore {
	readonly durable = false;
	private readonly max: number;
	private lru: LRUCache<string, Receipt> | null = null;

	constructor(max = 100_000) {
		this.max = max;
	}

	/**
	 * Made on first use: lru-cache allocates its index for `max` entries up front (2 MiB for 100,000), which every
	 * node would otherwise carry whether or not it consumes a channel.
	 */
	private get receipts(): LRUCache<string, Receipt> {
		return (this.lru ??= new LRUCache({ max: this.max }));
	}

	async claim(group: string, id: string, leaseMs: number): Promise<Claim> {
		const key = `${group}\0${id}`;
		const r = this.receipts.get(key);
		if (r?.done) return "done";
		if (r && r.leaseUntil > Date.now()) return "busy";
		this.receipts.set(key, { done: false, leaseUntil: Date.now() + leaseMs });
		return "claimed";
	}

	async complete(group: string, id: string): Promise<void> {
		this.receipts.set(`${group}\0${id}`, { done: true, leaseUntil: 0 });
	}

	async release(group: string, id: string): Promise<void> {
		const key = `${group}\0${id}`;
		if (!this.receipts.get(key)?.done) this.receipts.delete(key);
	}

	async close(): Promise<void> {
		this.lru?.clear();
	}
}

export interface PostgresReceiptsOptions {
	url: string;
	schema: string;
	/** Done receipts older than this (ms) are purged: keep it above the streams' max age. */
	retention: number;
}

/** Receipts in PostgreSQL, shared by every member of a group on every node. */
export class PostgresReceipts implements ReceiptStore {
	readonly durable = true;
	private readonly opts: PostgresReceiptsOptions;
	private readonly table: string;
	private pool: pg.Pool | null = null;
	private ready: Promise<pg.Pool> | null = null;
	private purger: NodeJS.Timeout | null = null;

	constructor(opts: PostgresReceiptsOptions) {
		this.opts = opts;
		this.table = `${ident(opts.schema)}.lattice_channel_receipts`;
	}

	private open(): Promise<pg.Pool> {
		this.ready ??= (async () => {
			const pool = (this.pool ??= await acquirePool(this.opts.url));
			await ensureTables(pool, this.opts.schema, [
				`CREATE TABLE IF NOT EXISTS {schema}.lattice_channel_receipts (
					grp text NOT NULL, id text NOT NULL, done boolean NOT NULL DEFAULT false,
					lease_until timestamptz NOT NULL, done_at timestamptz,
					PRIMARY KEY (grp, id))`,
				`CREATE INDEX IF NOT EXISTS lattice_channel_receipts_done_at ON {schema}.lattice_channel_receipts (done_at) WHERE done`
			]);
			this.purger = setInterval(() => void this.purge().catch(() => undefined), Math.min(this.opts.retention, 3_600_000));
			this.purger.unref();
			return pool;
		})();
		// A failed open (database down) is retried on the next call rather than remembered.
		this.ready.catch(() => (this.ready = null));
		return this.ready;
	}

	async claim(group: string, id: string, leaseMs: number): Promise<Claim> {
		const pool = await this.open();
		const claimed = await pool.query(
			`INSERT INTO ${this.table} AS r (grp, id, lease_until) VALUES ($1, $2, now() + make_interval(secs => $3))
			 ON CONFLICT (grp, id) DO UPDATE SET lease_until = EXCLUDED.lease_until
			 WHERE NOT r.done AND r.lease_until < now()
			 RETURNING 1`,
			[group, id, leaseMs / 1000]
		);
		if (claimed.rowCount === 1) return "claimed";
		const { rows } = await pool.query<{ done: boolean }>(`SELECT done FROM ${this.table} WHERE grp = $1 AND id = $2`, [group, id]);
		return rows[0]?.done ? "done" : "busy";
	}

	async complete(group: string, id: string): Promise<void> {
		const pool = await this.open();
		await pool.query(`UPDATE ${this.table} SET done = true, done_at = now() WHERE grp = $1 AND id = $2`, [group, id]);
	}

	async release(group: string, id: string): Promise<void> {
		const pool = await this.open();
		await pool.query(`DELETE FROM ${this.table} WHERE grp = $1 AND id = $2 AND NOT done`, [group, id]);
	}

	private async purge(): Promise<void> {
		await this.pool?.query(`DELETE FROM ${this.table} WHERE done AND done_at < now() - make_interval(secs => $1)`, [this.opts.retention / 1000]);
	}

	async close(): Promise<void> {
		if (this.purger) clearInterval(this.purger);
		const pool = this.pool;
		this.pool = null;
		this.ready = null;
		if (pool) await releasePool(pool);
	}
}
