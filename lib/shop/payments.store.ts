import { PgStore, transaction } from "../pg.ts";
import { cancelled } from "./errors.ts";

export interface Charge {
	key: string;
	orderId: string;
	amount: number;
	/** `voided` is a tombstone: a refund that came before (or instead of) its charge. */
	status: "charged" | "refunded" | "voided";
}

/** Charges for the example shop, idempotent by key; a refund leaves a tombstone that refuses a late charge. */
export interface PaymentsStore {
	open(): Promise<void>;
	close(): Promise<void>;
	charge(key: string, orderId: string, amount: number): Promise<Charge>;
	refund(key: string): Promise<Charge>;
}

/** In memory (no DATABASE_URL): gone with the process. */
export class MemoryPaymentsStore implements PaymentsStore {
	private readonly charges = new Map<string, Charge>();

	async open(): Promise<void> {}
	async close(): Promise<void> {}

	async charge(key: string, orderId: string, amount: number): Promise<Charge> {
		const existing = this.charges.get(key);
		if (existing) {
			if (existing.status !== "charged") throw cancelled(key);
			return { ...existing };
		}
		const c: Charge = { key, orderId, amount, status: "charged" };
		this.charges.set(key, c);
		return { ...c };
	}

	async refund(key: string): Promise<Charge> {
		const c = this.charges.get(key);
		if (!c) {
			const tombstone: Charge = { key, orderId: "", amount: 0, status: "voided" };
			this.charges.set(key, tombstone);
			return { ...tombstone };
		}
		if (c.status === "charged") c.status = "refunded";
		return { ...c };
	}
}

interface Row {
	key: string;
	order_id: string;
	amount: string;
	status: Charge["status"];
}

const charge = (r: Row): Charge => ({ key: r.key, orderId: r.order_id, amount: Number(r.amount), status: r.status });

const DDL = [
	`CREATE TABLE IF NOT EXISTS {schema}.payments_charges (
		key text PRIMARY KEY, order_id text NOT NULL, amount numeric(12, 2) NOT NULL, status text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`
];

/** In PostgreSQL: the key is the primary key, so a charge is stored once however often it is asked for. */
export class PostgresPaymentsStore extends PgStore implements PaymentsStore {
	private readonly table = this.tableName("payments_charges");

	constructor(opts: { url: string; schema: string }) {
		super(opts, "payments store", DDL);
	}

	async charge(key: string, orderId: string, amount: number): Promise<Charge> {
		const { rows } = await this.db.query<Row>(
			`INSERT INTO ${this.table} (key, order_id, amount, status) VALUES ($1, $2, $3, 'charged')
			 ON CONFLICT (key) DO NOTHING RETURNING key, order_id, amount, status`,
			[key, orderId, amount]
		);
		if (rows[0]) return charge(rows[0]);
		const existing = await this.db.query<Row>(`SELECT key, order_id, amount, status FROM ${this.table} WHERE key = $1`, [key]);
		const c = existing.rows[0]!;
		if (c.status !== "charged") throw cancelled(key);
		return charge(c);
	}

	refund(key: string): Promise<Charge> {
		return transaction(this.db, async c => {
			const tombstone = await c.query<Row>(
				`INSERT INTO ${this.table} (key, order_id, amount, status) VALUES ($1, '', 0, 'voided')
				 ON CONFLICT (key) DO NOTHING RETURNING key, order_id, amount, status`,
				[key]
			);
			if (tombstone.rows[0]) return charge(tombstone.rows[0]);
			const { rows } = await c.query<Row>(
				`UPDATE ${this.table} SET status = CASE WHEN status = 'charged' THEN 'refunded' ELSE status END, updated_at = now()
				 WHERE key = $1 RETURNING key, order_id, amount, status`,
				[key]
			);
			return charge(rows[0]!);
		});
	}
}
