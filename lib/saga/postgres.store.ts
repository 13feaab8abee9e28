import { PgStore } from "../pg.ts";
import type { SagaRecord, SagaStatus } from "./saga.ts";
import type { SagaStore } from "./store.ts";

interface Row {
	id: string;
	saga: string;
	status: SagaStatus;
	step: number;
	attempted: number;
	data: Record<string, unknown>;
	error: SagaRecord["error"];
	deadline: Date;
	history: SagaRecord["history"];
	created_at: Date;
	updated_at: Date;
}

const COLUMNS = "id, saga, status, step, attempted, data, error, deadline, history, created_at, updated_at";

function toRecord(r: Row): SagaRecord {
	return {
		id: r.id,
		saga: r.saga,
		status: r.status,
		step: r.step,
		attempted: r.attempted,
		data: r.data,
		error: r.error,
		deadline: r.deadline.getTime(),
		history: r.history,
		createdAt: r.created_at.getTime(),
		updatedAt: r.updated_at.getTime()
	};
}

const DDL = [
	`CREATE TABLE IF NOT EXISTS {schema}.lattice_sagas (
		id text PRIMARY KEY, saga text NOT NULL, status text NOT NULL, step integer NOT NULL, attempted integer NOT NULL,
		data jsonb NOT NULL, error jsonb, deadline timestamptz NOT NULL, history jsonb NOT NULL,
		owner text, owner_node text, lease_until timestamptz NOT NULL,
		created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS lattice_sagas_open ON {schema}.lattice_sagas (saga, lease_until) WHERE status IN ('running', 'compensating')`
];

/**
 * Sagas in PostgreSQL (`lattice_sagas`): one row per saga, rewritten at every step under the owner's lease.
 * Unfinished sagas are claimed with `FOR UPDATE SKIP LOCKED`, so replicas sweeping at once split them.
 */
export class PostgresSagaStore extends PgStore implements SagaStore {
	readonly durable = true;
	private readonly table = this.tableName("lattice_sagas");

	constructor(opts: { url: string; schema: string }) {
		super(opts, "saga store", DDL);
	}

	async create(rec: SagaRecord, owner: string, node: string, leaseMs: number) {
		const { rows } = await this.db.query<Row>(
			`INSERT INTO ${this.table} (${COLUMNS}, owner, owner_node, lease_until)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8 / 1000.0), $9, to_timestamp($10 / 1000.0), to_timestamp($11 / 1000.0),
			         $12, $13, now() + make_interval(secs => $14))
			 ON CONFLICT (id) DO NOTHING RETURNING ${COLUMNS}`,
			[
				rec.id,
				rec.saga,
				rec.status,
				rec.step,
				rec.attempted,
				JSON.stringify(rec.data),
				rec.error ? JSON.stringify(rec.error) : null,
				rec.deadline,
				JSON.stringify(rec.history),
				rec.createdAt,
				rec.updatedAt,
				owner,
				node,
				leaseMs / 1000
			]
		);
		if (rows[0]) return { created: true, record: toRecord(rows[0]) };
		const existing = await this.get(rec.id);
		if (!existing) throw new Error(`Saga '${rec.id}' vanished while being created`);
		return { created: false, record: existing };
	}

	async save(rec: SagaRecord, owner: string, leaseMs: number): Promise<boolean> {
		const { rowCount } = await this.db.query(
			`UPDATE ${this.table} SET status = $3, step = $4, attempted = $5, data = $6, error = $7, history = $8,
			        updated_at = to_timestamp($9 / 1000.0), lease_until = now() + make_interval(secs => $10)
			 WHERE id = $1 AND owner = $2`,
			[
				rec.id,
				owner,
				rec.status,
				rec.step,
				rec.attempted,
				JSON.stringify(rec.data),
				rec.error ? JSON.stringify(rec.error) : null,
				JSON.stringify(rec.history),
				rec.updatedAt,
				leaseMs / 1000
			]
		);
		return rowCount === 1;
	}

	async get(id: string): Promise<SagaRecord | null> {
		const { rows } = await this.db.query<Row>(`SELECT ${COLUMNS} FROM ${this.table} WHERE id = $1`, [id]);
		return rows[0] ? toRecord(rows[0]) : null;
	}

	async claim(types: string[], owner: string, node: string, limit: number, leaseMs: number): Promise<SagaRecord[]> {
		const { rows } = await this.db.query<Row>(
			`UPDATE ${this.table} SET owner = $2, owner_node = $3, lease_until = now() + make_interval(secs => $5)
			 WHERE id IN (
			   SELECT id FROM ${this.table}
			   WHERE saga = ANY($1) AND status IN ('running', 'compensating')
			     AND (lease_until < now() OR owner_node = $3) AND owner IS DISTINCT FROM $2
			   ORDER BY updated_at LIMIT $4 FOR UPDATE SKIP LOCKED)
			 RETURNING ${COLUMNS}`,
			[types, owner, node, limit, leaseMs / 1000]
		);
		return rows.map(toRecord);
	}

	async release(id: string, owner: string): Promise<void> {
		await this.db.query(`UPDATE ${this.table} SET owner = NULL, owner_node = NULL, lease_until = now() WHERE id = $1 AND owner = $2`, [id, owner]);
	}
}
