import assert from "node:assert/strict";
import type pg from "pg";

/** Shared checks of the example shop's saga suites: what the database says about every order. */

export interface OrderAudit {
	id: string;
	status: string;
	saga: string | null;
	reservation: string | null;
	reservedQty: number;
	charge: string | null;
	amount: number;
}

export async function auditOrders(db: pg.Client, schema: string): Promise<OrderAudit[]> {
	const { rows } = await db.query(
		`SELECT o.id, o.doc->>'status' AS status, s.status AS saga, r.status AS reservation, coalesce(r.qty, 0) AS reserved_qty,
		        c.status AS charge, coalesce(c.amount, 0)::float AS amount
		 FROM ${schema}.orders o
		 LEFT JOIN ${schema}.lattice_sagas s ON s.id = o.id
		 LEFT JOIN ${schema}.inventory_reservations r ON r.key = o.id || ':reserve'
		 LEFT JOIN ${schema}.payments_charges c ON c.key = o.id || ':charge'`
	);
	return rows.map(r => ({
		id: r.id,
		status: r.status,
		saga: r.saga,
		reservation: r.reservation,
		reservedQty: r.reserved_qty,
		charge: r.charge,
		amount: r.amount
	}));
}

/**
 * Never half: a confirmed order holds its reservation and its charge; a cancelled one holds neither (released,
 * refunded, or never made). Every saga is finished.
 */
export function assertAllOrNothing(orders: OrderAudit[]): void {
	for (const o of orders) {
		const where = JSON.stringify(o);
		if (o.status === "confirmed") {
			assert.equal(o.saga, "completed", where);
			assert.equal(o.reservation, "reserved", where);
			assert.equal(o.charge, "charged", where);
		} else {
			assert.equal(o.status, "cancelled", where);
			assert.equal(o.saga, "compensated", where);
			assert.ok(o.reservation === null || o.reservation === "released", where);
			assert.ok(o.charge === null || o.charge === "refunded" || o.charge === "voided", where);
		}
	}
}

/** Stock left for `sku` plus what active reservations hold equals what there was. */
export async function assertStockBalances(db: pg.Client, schema: string, sku: string, initial: number): Promise<number> {
	const { rows } = await db.query(
		`SELECT i.available, (SELECT coalesce(sum(qty), 0)::int FROM ${schema}.inventory_reservations WHERE sku = $1 AND status = 'reserved') AS held
		 FROM ${schema}.inventory_items i WHERE sku = $1`,
		[sku]
	);
	assert.ok(rows[0].available >= 0);
	assert.equal(rows[0].available + rows[0].held, initial, `available ${rows[0].available} + held ${rows[0].held}`);
	return rows[0].available;
}
