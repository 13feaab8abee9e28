import { randomUUID } from "node:crypto";
import type pg from "pg";
import { Errors, type ServiceBroker, type Service } from "moleculer";
import { ErrorType } from "../../lib/errors.ts";
import { createPool } from "../../lib/pg.ts";

export interface PostgresAdapterOptions {
	/** postgres:// connection string. */
	url: string;
	/** Table name; one table per collection. */
	table: string;
	/** Schema the table lives in (created if missing). Default "public". */
	schema?: string;
	/** Pool size. Default 10. */
	poolSize?: number;
	/**
	 * Ordered migrations for this collection, applied once each at start under an advisory lock, so replicas
	 * starting together never run one twice. Statements may use `{table}` for the qualified table name.
	 */
	migrations?: string[];
}

/** Shape moleculer-db hands to `find`/`count`. */
export interface FindFilters {
	limit?: number;
	offset?: number;
	sort?: string | string[];
	search?: string;
	searchFields?: string | string[];
	query?: Record<string, unknown>;
}

type Doc = Record<string, unknown>;
interface Row {
	id: string;
	version: number;
	doc: Doc;
}

const FIELD = /^[A-Za-z_][\w]*$/;

function badQuery(message: string, data?: unknown): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(message, 400, ErrorType.BAD_REQUEST, data);
}

function ident(name: string): string {
	if (!FIELD.test(name)) throw new Error(`Invalid SQL identifier '${name}'`);
	return `"${name}"`;
}

/**
 * A moleculer-db 0.9 adapter on `pg`. Each collection is a table of (id, version, doc jsonb): documents keep
 * moleculer-db's schemaless model, the version column gives optimistic concurrency, and equality queries use
 * jsonb containment (indexable with GIN). Chosen over an ORM-backed adapter (sequelize, knex) because moleculer-db
 * needs a dozen small methods, not a query builder, and over the unmaintained community pg adapters.
 */
export class PostgresAdapter {
	private readonly opts: Required<Omit<PostgresAdapterOptions, "migrations">> & { migrations: string[] };
	private pool: pg.Pool | null = null;
	private readonly qualified: string;
	broker!: ServiceBroker;
	service!: Service;

	constructor(opts: PostgresAdapterOptions) {
		this.opts = { ...opts, schema: opts.schema ?? "public", poolSize: opts.poolSize ?? 10, migrations: opts.migrations ?? [] };
		this.qualified = `${ident(this.opts.schema)}.${ident(this.opts.table)}`;
	}

	init(broker: ServiceBroker, service: Service): void {
		this.broker = broker;
		this.service = service;
	}

	async connect(): Promise<void> {
		this.pool = await createPool({ connectionString: this.opts.url, max: this.opts.poolSize });
		this.pool.on("error", err => this.service?.logger.warn("PostgreSQL idle client error", err.message));
		await this.migrate();
	}

	async disconnect(): Promise<void> {
		const pool = this.pool;
		this.pool = null;
		await pool?.end();
	}

	private async migrate(): Promise<void> {
		const client = await this.pool!.connect();
		try {
			await client.query("BEGIN");
			// One migration run per schema at a time across all replicas and services: the schema and the migrations
			// table are shared, so per-table locks would let two services race to create them.
			await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`lattice-migrations:${this.opts.schema}`]);
			await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(this.opts.schema)}`);
			await client.query(
				`CREATE TABLE IF NOT EXISTS ${ident(this.opts.schema)}.lattice_migrations (
					collection text NOT NULL, step integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
					PRIMARY KEY (collection, step))`
			);
			const steps = [
				`CREATE TABLE IF NOT EXISTS {table} (
					id text PRIMARY KEY,
					version integer NOT NULL DEFAULT 1,
					doc jsonb NOT NULL,
					created_at timestamptz NOT NULL DEFAULT now(),
					updated_at timestamptz NOT NULL DEFAULT now())`,
				`CREATE INDEX IF NOT EXISTS ${ident(this.opts.table + "_doc_gin")} ON {table} USING gin (doc jsonb_path_ops)`,
				...this.opts.migrations
			];
			const done = await client.query<{ step: number }>(
				`SELECT step FROM ${ident(this.opts.schema)}.lattice_migrations WHERE collection = $1`,
				[this.opts.table]
			);
			const applied = new Set(done.rows.map(r => r.step));
			for (const [i, sql] of steps.entries()) {
				if (applied.has(i)) continue;
				await client.query(sql.replaceAll("{table}", this.qualified));
				await client.query(`INSERT INTO ${ident(this.opts.schema)}.lattice_migrations (collection, step) VALUES ($1, $2)`, [
					this.opts.table,
					i
				]);
			}
			await client.query("COMMIT");
		} catch (err) {
			await client.query("ROLLBACK").catch(() => undefined);
			throw err;
		} finally {
			client.release();
		}
	}

	private query<T extends pg.QueryResultRow = Row>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<T>> {
		if (!this.pool) return Promise.reject(new Errors.MoleculerRetryableError("Database is not connected", 503, "DB_DISCONNECTED"));
		return this.pool.query<T>(sql, params);
	}

	private toEntity(row: Row): Doc {
		return { ...row.doc, _id: row.id, version: row.version };
	}

	/** WHERE clause for a moleculer-db query object (equality on document fields or id) plus search. */
	private where(filters: FindFilters, params: unknown[]): string {
		const parts: string[] = [];
		const query = { ...(filters.query ?? {}) };
		const id = query._id ?? query.id;
		delete query._id;
		delete query.id;
		if (id !== undefined) {
			if (typeof id === "object" && id !== null && Array.isArray((id as { $in?: unknown[] }).$in)) {
				params.push((id as { $in: unknown[] }).$in.map(String));
				parts.push(`id = ANY($${params.length})`);
			} else {
				params.push(String(id));
				parts.push(`id = $${params.length}`);
			}
		}
		for (const [k, v] of Object.entries(query)) {
			if (!FIELD.test(k)) throw badQuery(`Unsupported query field '${k}'`, { field: k });
			if (k === "version") {
				params.push(Number(v));
				parts.push(`version = $${params.length}`);
				continue;
			}
			if (v !== null && typeof v === "object" && Object.keys(v).some(key => key.startsWith("$"))) {
				throw badQuery(`Unsupported query operator on '${k}': only equality is supported`, { field: k });
			}
		}
		const plain = Object.fromEntries(Object.entries(query).filter(([k]) => k !== "version"));
		if (Object.keys(plain).length > 0) {
			params.push(JSON.stringify(plain));
			parts.push(`doc @> $${params.length}::jsonb`);
		}
		if (filters.search) {
			const fields = (Array.isArray(filters.searchFields) ? filters.searchFields : (filters.searchFields ?? "").split(/\s+/)).filter(Boolean);
			if (fields.length === 0) throw badQuery("search needs searchFields");
			params.push(`%${filters.search.replace(/[\\%_]/g, m => "\\" + m)}%`);
			const p = `$${params.length}`;
			parts.push(
				"(" +
					fields
						.map(f => {
							if (!FIELD.test(f)) throw badQuery(`Unsupported search field '${f}'`, { field: f });
							return `doc->>'${f}' ILIKE ${p}`;
						})
						.join(" OR ") +
					")"
			);
		}
		return parts.length ? ` WHERE ${parts.join(" AND ")}` : "";
	}

	private orderBy(sort: FindFilters["sort"]): string {
		const list = (Array.isArray(sort) ? sort : (sort ?? "").split(/[\s,]+/)).filter(Boolean);
		if (list.length === 0) return " ORDER BY created_at, id";
		return (
			" ORDER BY " +
			list
				.map(s => {
					const desc = s.startsWith("-");
					const f = desc ? s.slice(1) : s;
					if (!FIELD.test(f)) throw badQuery(`Unsupported sort field '${f}'`, { field: f });
					const expr = f === "id" || f === "_id" ? "id" : f === "version" ? "version" : `doc->'${f}'`;
					return `${expr} ${desc ? "DESC" : "ASC"}`;
				})
				.join(", ") +
			", id"
		);
	}

	async find(filters: FindFilters = {}): Promise<Doc[]> {
		const params: unknown[] = [];
		let sql = `SELECT id, version, doc FROM ${this.qualified}${this.where(filters, params)}${this.orderBy(filters.sort)}`;
		if (filters.limit != null) {
			params.push(Number(filters.limit));
			sql += ` LIMIT $${params.length}`;
		}
		if (filters.offset != null) {
			params.push(Number(filters.offset));
			sql += ` OFFSET $${params.length}`;
		}
		return (await this.query(sql, params)).rows.map(r => this.toEntity(r));
	}

	async findOne(query: Record<string, unknown>): Promise<Doc | null> {
		return (await this.find({ query, limit: 1 }))[0] ?? null;
	}

	async findById(id: unknown): Promise<Doc | null> {
		const { rows } = await this.query(`SELECT id, version, doc FROM ${this.qualified} WHERE id = $1`, [String(id)]);
		return rows[0] ? this.toEntity(rows[0]) : null;
	}

	async findByIds(ids: unknown[]): Promise<Doc[]> {
		const { rows } = await this.query(`SELECT id, version, doc FROM ${this.qualified} WHERE id = ANY($1)`, [ids.map(String)]);
		return rows.map(r => this.toEntity(r));
	}

	async count(filters: FindFilters = {}): Promise<number> {
		const params: unknown[] = [];
		const { rows } = await this.query<{ n: string }>(`SELECT count(*) AS n FROM ${this.qualified}${this.where(filters, params)}`, params);
		return Number(rows[0]?.n ?? 0);
	}

	private split(entity: Doc): { id: string; doc: Doc } {
		const { _id, id, version: _v, ...doc } = entity;
		return { id: String(_id ?? id ?? randomUUID()), doc };
	}

	async insert(entity: Doc): Promise<Doc> {
		const { id, doc } = this.split(entity);
		const { rows } = await this.query(`INSERT INTO ${this.qualified} (id, doc) VALUES ($1, $2) RETURNING id, version, doc`, [id, doc]);
		return this.toEntity(rows[0]!);
	}

	async insertMany(entities: Doc[]): Promise<Doc[]> {
		const out: Doc[] = [];
		for (const e of entities) out.push(await this.insert(e));
		return out;
	}

	/** `$set` merges fields into the document; `$inc: { version: 1 }` is implied by every update. */
	private setClause(update: { $set?: Doc }, params: unknown[]): string {
		const { _id: _i, id: _d, version: _v, ...set } = update.$set ?? {};
		params.push(JSON.stringify(set));
		return `doc = doc || $${params.length}::jsonb, version = version + 1, updated_at = now()`;
	}

	async updateMany(query: Record<string, unknown>, update: { $set?: Doc }): Promise<number> {
		const params: unknown[] = [];
		const set = this.setClause(update, params);
		const { rowCount } = await this.query(`UPDATE ${this.qualified} SET ${set}${this.where({ query }, params)}`, params);
		return rowCount ?? 0;
	}

	async updateById(id: unknown, update: { $set?: Doc }): Promise<Doc | null> {
		const params: unknown[] = [];
		const set = this.setClause(update, params);
		params.push(String(id));
		const { rows } = await this.query(`UPDATE ${this.qualified} SET ${set} WHERE id = $${params.length} RETURNING id, version, doc`, params);
		return rows[0] ? this.toEntity(rows[0]) : null;
	}

	async removeMany(query: Record<string, unknown>): Promise<number> {
		const params: unknown[] = [];
		const { rowCount } = await this.query(`DELETE FROM ${this.qualified}${this.where({ query }, params)}`, params);
		return rowCount ?? 0;
	}

	async removeById(id: unknown): Promise<Doc | null> {
		const { rows } = await this.query(`DELETE FROM ${this.qualified} WHERE id = $1 RETURNING id, version, doc`, [String(id)]);
		return rows[0] ? this.toEntity(rows[0]) : null;
	}

	async clear(): Promise<number> {
		const { rowCount } = await this.query(`DELETE FROM ${this.qualified}`);
		return rowCount ?? 0;
	}

	entityToObject(entity: Doc): Doc {
		return { ...entity };
	}

	beforeSaveTransformID(entity: Doc, idField: string): Doc {
		if (idField === "_id" || entity[idField] === undefined) return entity;
		const { [idField]: id, ...rest } = entity;
		return { ...rest, _id: id };
	}

	afterRetrieveTransformID(entity: Doc, idField: string): Doc {
		if (idField === "_id") return entity;
		const { _id, ...rest } = entity;
		return { ...rest, [idField]: _id };
	}
}
