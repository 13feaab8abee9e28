import type pg from "pg";

/**
 * PostgreSQL plumbing shared by Lattice's own tables (channel receipts, saga state, the example domain's
 * stores) and the moleculer-db adapter: pools, one shared pool per database URL and process, and idempotent
 * table creation that replicas starting together cannot trip over.
 */

const IDENT = /^[A-Za-z_][\w]*$/;

/** A quoted SQL identifier; anything but a plain name is refused (names come from configuration, never from users). */
export function ident(name: string): string {
	if (!IDENT.test(name)) throw new Error(`Invalid SQL identifier '${name}'`);
	return `"${name}"`;
}

interface SharedPool {
	pool: pg.Pool;
	users: number;
}

const pools = new Map<string, SharedPool>();

/** The driver, imported on first use: a node without DATABASE_URL never loads it. */
async function driver(): Promise<typeof pg> {
	return (await import("pg")).default;
}

/** A pool of its own. The caller handles its `error` events (an idle client losing its connection). */
export async function createPool(config: pg.PoolConfig): Promise<pg.Pool> {
	const { Pool } = await driver();
	return new Pool(config);
}

/**
 * The process's pool for `url`, shared by every store that asks for it, so a node holds a handful of
 * connections however many stores it runs. Give it back with {@link releasePool}.
 */
export async function acquirePool(url: string, max = 10): Promise<pg.Pool> {
	const { Pool } = await driver();
	let shared = pools.get(url);
	if (!shared) {
		const pool = new Pool({ connectionString: url, max });
		// An idle client losing its connection must not crash the process; the next query reconnects.
		pool.on("error", () => undefined);
		shared = { pool, users: 0 };
		pools.set(url, shared);
	}
	shared.users++;
	return shared.pool;
}

export async function releasePool(pool: pg.Pool): Promise<void> {
	for (const [url, shared] of pools) {
		if (shared.pool !== pool) continue;
		if (--shared.users > 0) return;
		pools.delete(url);
		await pool.end();
		return;
	}
}

// Concurrent CREATE … IF NOT EXISTS of the same object can still fail with a unique violation on the catalog.
const RACE_CODES = new Set(["23505", "42P06", "42P07", "42710"]);

/**
 * Runs idempotent DDL (`CREATE … IF NOT EXISTS`) in `schema`, creating the schema first. One node at a time
 * runs it (a transaction-level advisory lock on the schema); a lost race with DDL taken outside that lock is
 * retried.
 */
export async function ensureTables(pool: pg.Pool, schema: string, ddl: string[]): Promise<void> {
	const s = ident(schema);
	for (let attempt = 1; ; attempt++) {
		const client = await pool.connect();
		try {
			await client.query("BEGIN");
			await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`lattice-ddl:${schema}`]);
			await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
			for (const sql of ddl) await client.query(sql.replaceAll("{schema}", s));
			await client.query("COMMIT");
			return;
		} catch (err) {
			await client.query("ROLLBACK").catch(() => undefined);
			if (attempt >= 3 || !RACE_CODES.has((err as { code?: string }).code ?? "")) throw err;
		} finally {
			client.release();
		}
	}
}

/** Runs `fn` in a transaction on one client of `pool`. */
export async function transaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
	const client = await pool.connect();
	try {
		await client.query("BEGIN");
		const result = await fn(client);
		await client.query("COMMIT");
		return result;
	} catch (err) {
		await client.query("ROLLBACK").catch(() => undefined);
		throw err;
	} finally {
		client.release();
	}
}

/**
 * What Lattice's PostgreSQL stores share: the process's pool for their database URL, their tables made when they
 * open (`ensureTables`), the pool handed back when they close. A subclass holds its DDL and its queries.
 */
export abstract class PgStore {
	protected readonly schema: string;
	private readonly url: string;
	private readonly name: string;
	private readonly ddl: readonly string[];
	private pool: pg.Pool | null = null;

	/** `name` says which store is not open yet; `ddl` may write `{schema}` for the quoted schema. */
	protected constructor(opts: { url: string; schema: string }, name: string, ddl: readonly string[]) {
		this.url = opts.url;
		this.schema = opts.schema;
		this.name = name;
		this.ddl = ddl;
	}

	/** `schema.table`, quoted. */
	protected tableName(table: string): string {
		return `${ident(this.schema)}.${ident(table)}`;
	}

	protected get db(): pg.Pool {
		if (!this.pool) throw new Error(`The ${this.name} is not open`);
		return this.pool;
	}

	async open(): Promise<void> {
		this.pool = await acquirePool(this.url);
		await ensureTables(this.pool, this.schema, [...this.ddl]);
	}

	async close(): Promise<void> {
		const pool = this.pool;
		this.pool = null;
		if (pool) await releasePool(pool);
	}
}
