import { notFound } from "../errors.ts";
import { PgStore, transaction } from "../pg.ts";
import { cancelled, outOfStock } from "./errors.ts";

export interface Item {
	sku: string;
	name: string;
	price: number;
	available: number;
}

export interface Reservation {
	key: string;
	sku: string;
	qty: number;
	unitPrice: number;
	/** `released` rows with qty 0 are tombstones: a release that came before (or instead of) its reservation. */
	status: "reserved" | "released";
}

/**
 * Stock and reservations for the example shop. `reserve` and `release` are idempotent by key, and a release
 * leaves a tombstone, so a reservation that arrives late (after its saga was already compensated) is refused
 * instead of holding stock forever.
 */
export interface InventoryStore {
	open(): Promise<void>;
	close(): Promise<void>;
	/** Adds these items unless they exist. */
	seed(items: Item[]): Promise<void>;
	/** Sets an item's stock (and price and name), creating it if needed. */
	put(item: Item): Promise<Item>;
	get(sku: string): Promise<Item | null>;
	list(): Promise<Item[]>;
	reserve(key: string, sku: string, qty: number): Promise<Reservation>;
	release(key: string): Promise<Reservation>;
}

/** In memory (no DATABASE_URL): gone with the process. */
export class MemoryInventoryStore implements InventoryStore {
	private readonly items = new Map<string, Item>();
	private readonly reservations = new Map<string, Reservation>();

	async open(): Promise<void> {}
	async close(): Promise<void> {}

	async seed(items: Item[]): Promise<void> {
		for (const i of items) if (!this.items.has(i.sku)) this.items.set(i.sku, { ...i });
	}

	async put(item: Item): Promise<Item> {
		this.items.set(item.sku, { ...item });
		return { ...item };
	}

	async get(sku: string): Promise<Item | null> {
		const i = this.items.get(sku);
		return i ? { ...i } : null;
	}

	async list(): Promise<Item[]> {
		return [...this.items.values()].map(i => ({ ...i }));
	}

	async reserve(key: string, sku: string, qty: number): Promise<Reservation> {
		const existing = this.reservations.get(key);
		if (existing) {
			if (existing.status === "released") throw cancelled(key);
			return { ...existing };
		}
		const item = this.items.get(sku);
		if (!item) throw notFound("Item", sku);
		if (item.available < qty) throw outOfStock(sku, qty, item.available);
		item.available -= qty;
		const r: Reservation = { key, sku, qty, unitPrice: item.price, status: "reserved" };
		this.reservations.set(key, r);
		return { ...r };
	}

	async release(key: string): Promise<Reservation> {
		const r = this.reservations.get(key);
		if (!r) {
			const tombstone: Reservation = { key, sku: "", qty: 0, unitPrice: 0, status: "released" };
			this.reservations.set(key, tombstone);
			return { ...tombstone };
		}
		if (r.status === "reserved") {
			const item = this.items.get(r.sku);
			if (item) item.available += r.qty;
			r.status = "released";
		}
		return { ...r };
	}
}

interface ItemRow {
	sku: string;
	name: string;
	price: string;
	available: number;
}

interface ReservationRow {
	key: string;
	sku: string;
	qty: number;
	unit_price: string;
	status: Reservation["status"];
}

const item = (r: ItemRow): Item => ({ sku: r.sku, name: r.name, price: Number(r.price), available: r.available });
const reservation = (r: ReservationRow): Reservation => ({ key: r.key, sku: r.sku, qty: r.qty, unitPrice: Number(r.unit_price), status: r.status });

const DDL = [
	`CREATE TABLE IF NOT EXISTS {schema}.inventory_items (
		sku text PRIMARY KEY, name text NOT NULL, price numeric(12, 2) NOT NULL,
		available integer NOT NULL CHECK (available >= 0))`,
	`CREATE TABLE IF NOT EXISTS {schema}.inventory_reservations (
		key text PRIMARY KEY, sku text NOT NULL, qty integer NOT NULL, unit_price numeric(12, 2) NOT NULL,
		status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`
];

/**
 * In PostgreSQL. Stock never goes negative: the decrement is one conditional UPDATE (`available >= qty`),
 * backed by a CHECK constraint, in the same transaction as the reservation row.
 */
export class PostgresInventoryStore extends PgStore implements InventoryStore {
	private readonly items = this.tableName("inventory_items");
	private readonly reservations = this.tableName("inventory_reservations");

	constructor(opts: { url: string; schema: string }) {
		super(opts, "inventory store", DDL);
	}

	async seed(items: Item[]): Promise<void> {
		for (const i of items) {
			await this.db.query(`INSERT INTO ${this.items} (sku, name, price, available) VALUES ($1, $2, $3, $4) ON CONFLICT (sku) DO NOTHING`, [
				i.sku,
				i.name,
				i.price,
				i.available
			]);
		}
	}

	async put(i: Item): Promise<Item> {
		const { rows } = await this.db.query<ItemRow>(
			`INSERT INTO ${this.items} (sku, name, price, available) VALUES ($1, $2, $3, $4)
			 ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price, available = EXCLUDED.available
			 RETURNING sku, name, price, available`,
			[i.sku, i.name, i.price, i.available]
		);
		return item(rows[0]!);
	}

	async get(sku: string): Promise<Item | null> {
		const { rows } = await this.db.query<ItemRow>(`SELECT sku, name, price, available FROM ${this.items} WHERE sku = $1`, [sku]);
		return rows[0] ? item(rows[0]) : null;
	}

	async list(): Promise<Item[]> {
		const { rows } = await this.db.query<ItemRow>(`SELECT sku, name, price, available FROM ${this.items} ORDER BY sku`);
		return rows.map(item);
	}

	reserve(key: string, sku: string, qty: number): Promise<Reservation> {
		return transaction(this.db, async c => {
			const inserted = await c.query<ReservationRow>(
				`INSERT INTO ${this.reservations} (key, sku, qty, unit_price, status)
				 SELECT $1, sku, $3, price, 'reserved' FROM ${this.items} WHERE sku = $2
				 ON CONFLICT (key) DO NOTHING RETURNING key, sku, qty, unit_price, status`,
				[key, sku, qty]
			);
			if (!inserted.rows[0]) {
				// Either a retry of this key (return what it did) or an unknown item.
				const { rows } = await c.query<ReservationRow>(`SELECT key, sku, qty, unit_price, status FROM ${this.reservations} WHERE key = $1`, [key]);
				if (!rows[0]) throw notFound("Item", sku);
				if (rows[0].status === "released") throw cancelled(key);
				return reservation(rows[0]);
			}
			const taken = await c.query<{ available: number }>(
				`UPDATE ${this.items} SET available = available - $2 WHERE sku = $1 AND available >= $2 RETURNING available`,
				[sku, qty]
			);
			if (taken.rowCount !== 1) {
				const left = await c.query<{ available: number }>(`SELECT available FROM ${this.items} WHERE sku = $1`, [sku]);
				throw outOfStock(sku, qty, left.rows[0]?.available ?? 0);
			}
			return reservation(inserted.rows[0]);
		});
	}

	release(key: string): Promise<Reservation> {
		return transaction(this.db, async c => {
			const tombstone = await c.query<ReservationRow>(
				`INSERT INTO ${this.reservations} (key, sku, qty, unit_price, status) VALUES ($1, '', 0, 0, 'released')
				 ON CONFLICT (key) DO NOTHING RETURNING key, sku, qty, unit_price, status`,
				[key]
			);
			if (tombstone.rows[0]) return reservation(tombstone.rows[0]);
			const { rows } = await c.query<ReservationRow>(`SELECT key, sku, qty, unit_price, status FROM ${this.reservations} WHERE key = $1 FOR UPDATE`, [key]);
			const r = rows[0]!;
			if (r.status === "reserved") {
				await c.query(`UPDATE ${this.items} SET available = available + $2 WHERE sku = $1`, [r.sku, r.qty]);
				await c.query(`UPDATE ${this.reservations} SET status = 'released', updated_at = now() WHERE key = $1`, [key]);
				r.status = "released";
			}
			return reservation(r);
		});
	}
}
