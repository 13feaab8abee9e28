import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import pg from "pg";
import type { ServiceBroker } from "moleculer";
import type { SagaRecord } from "../../../lib/saga/saga.ts";
import ApiService from "../../../services/api.service.ts";
import InventoryService from "../../../services/inventory.service.ts";
import OrdersService from "../../../services/orders.service.ts";
import PaymentsService from "../../../services/payments.service.ts";
import { ADMIN, asUser, bearer, READER, signToken } from "../../support/auth.ts";
import { createBroker, metricValue, uniqueNamespace } from "../../support/cluster.ts";
import { sleep } from "../../support/processes.ts";
import { assertAllOrNothing, assertStockBalances, auditOrders } from "./shop.ts";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = `t_${uniqueNamespace("saga").replace(/-/g, "_")}`;
const AS_ADMIN = asUser(ADMIN);

interface Order {
	id: string;
	status: string;
	amount?: number;
	reason?: { step: string; type: string };
}

let db: pg.Client;
before(async () => {
	db = new pg.Client({ connectionString: DATABASE_URL });
	await db.connect();
	await db.query(`CREATE SCHEMA ${schema}`);
});
after(async () => {
	await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
	await db.end();
});

async function withShop(extra: Record<string, string>, fn: (b: ServiceBroker) => Promise<void>, gateway = false) {
	const broker = await createBroker({ DATABASE_URL, LATTICE_DB_SCHEMA: schema, ...extra }, [
		OrdersService,
		InventoryService,
		PaymentsService,
		...(gateway ? [ApiService] : [])
	]);
	try {
		await fn(broker);
	} finally {
		await broker.stop();
	}
}

function place(broker: ServiceBroker, sku: string, qty = 1): Promise<Order> {
	return broker.call("orders.create", { sku, qty }, { ...AS_ADMIN, timeout: 60_000 });
}

function stock(broker: ServiceBroker, sku: string, available: number, price = 10) {
	return broker.call("inventory.put", { sku, name: sku, price, available }, AS_ADMIN);
}

async function saga(id: string): Promise<SagaRecord> {
	const { rows } = await db.query(`SELECT status, history FROM ${schema}.lattice_sagas WHERE id = $1`, [id]);
	return rows[0];
}

test("happy path through the gateway: reserved, charged, confirmed; the same Idempotency key gives the same order", async () => {
	await withShop(
		{},
		async broker => {
			await stock(broker, "happy-mug", 5, 12.5);
			const port = ((broker.getLocalService("api") as unknown as { server: { address(): AddressInfo } }).server.address()).port;
			const url = `http://127.0.0.1:${port}/api/orders`;
			const post = async (token: string | null, body: unknown) =>
				fetch(url, { method: "POST", headers: { "content-type": "application/json", ...(token ? bearer(token) : {}) }, body: JSON.stringify(body) });
			const admin = await signToken(ADMIN);

			const res = await post(admin, { sku: "happy-mug", qty: 2, idempotencyKey: "cart-1" });
			assert.equal(res.status, 200);
			const order = (await res.json()) as Order;
			assert.equal(order.status, "confirmed");
			assert.equal(order.amount, 25);

			const again = (await (await post(admin, { sku: "happy-mug", qty: 2, idempotencyKey: "cart-1" })).json()) as Order;
			assert.equal(again.id, order.id, "a retried POST with the same key is the same order");
			const got = await fetch(`${url}/${order.id}`, { headers: bearer(admin) });
			assert.equal(((await got.json()) as Order).status, "confirmed");

			assert.equal((await post(null, { sku: "happy-mug", qty: 1 })).status, 401);
			assert.equal((await post(await signToken(READER), { sku: "happy-mug", qty: 1 })).status, 403);
			// The saga's internal steps are not reachable from outside.
			assert.equal((await fetch(`http://127.0.0.1:${port}/api/orders/${order.id}/confirm`, { method: "POST", headers: bearer(admin) })).status, 404);

			const s = await saga(order.id);
			assert.equal(s.status, "completed");
			assert.deepEqual(
				s.history.filter(h => h.event === "succeeded").map(h => h.step),
				["create", "reserve", "charge", "confirm"]
			);
			const [audit] = (await auditOrders(db, schema)).filter(o => o.id === order.id);
			assert.deepEqual([audit!.reservation, audit!.reservedQty, audit!.charge, audit!.amount], ["reserved", 2, "charged", 25]);
			assert.equal(await assertStockBalances(db, schema, "happy-mug", 5), 3);
		},
		true
	);
});

const STEPS = [
	{ step: "create", action: "orders.record", undone: [] as string[] },
	{ step: "reserve", action: "inventory.reserve", undone: ["create"] },
	{ step: "charge", action: "payments.charge", undone: ["reserve", "create"] },
	{ step: "confirm", action: "orders.confirm", undone: ["charge", "reserve", "create"] }
];

for (const { step, action, undone } of STEPS) {
	test(`a failure at '${step}' (retried, then given up) compensates every earlier step, last first`, async () => {
		// Retryable, so the saga first tries the step again: 1 + 2 retries.
		const faults = JSON.stringify([{ match: action, abort: { code: 503, message: `no ${step} today` } }]);
		await withShop({ LATTICE_FAULTS: faults }, async broker => {
			const sku = `fail-${step}`;
			await stock(broker, sku, 10);
			const order = await place(broker, sku, 3);
			assert.equal(order.status, "cancelled");
			assert.equal(order.reason?.step, step);
			assert.equal(order.reason?.type, "LATTICE_FAULT_INJECTED");

			const s = await saga(order.id);
			assert.equal(s.status, "compensated");
			// The failed step itself may have taken effect before failing (a timeout, a lost reply): it is undone too.
			assert.deepEqual(
				s.history.filter(h => h.event === "compensated").map(h => h.step),
				[step, ...undone]
			);
			const text = await (broker.options as { metricsRegistry: { metrics(): Promise<string> } }).metricsRegistry.metrics();
			assert.equal(metricValue(text, "lattice_faults_injected_total", { name: action }), 3);
			assertAllOrNothing((await auditOrders(db, schema)).filter(o => o.id === order.id));
			assert.equal(await assertStockBalances(db, schema, sku, 10), 10, "the stock is back");
		});
	});
}

test("200 concurrent orders against a stock of 50: exactly 50 are confirmed and the stock never goes negative", async () => {
	await withShop({}, async broker => {
		await stock(broker, "scarce", 50);
		let lowest = Infinity;
		let watching = true;
		const watcher = (async () => {
			const probe = new pg.Client({ connectionString: DATABASE_URL });
			await probe.connect();
			while (watching) {
				const { rows } = await probe.query(`SELECT available FROM ${schema}.inventory_items WHERE sku = 'scarce'`);
				lowest = Math.min(lowest, rows[0].available);
				await sleep(2);
			}
			await probe.end();
		})();
		const orders = await Promise.all(Array.from({ length: 200 }, () => place(broker, "scarce")));
		watching = false;
		await watcher;
		const confirmed = orders.filter(o => o.status === "confirmed");
		const cancelled = orders.filter(o => o.status === "cancelled");
		assert.equal(confirmed.length, 50);
		assert.equal(cancelled.length, 150);
		assert.ok(cancelled.every(o => o.reason?.type === "LATTICE_OUT_OF_STOCK"));
		assert.ok(lowest >= 0, `lowest stock seen: ${lowest}`);
		assert.equal(await assertStockBalances(db, schema, "scarce", 50), 0);
		const audit = (await auditOrders(db, schema)).filter(o => orders.some(x => x.id === o.id));
		assert.equal(audit.length, 200);
		assertAllOrNothing(audit);
	});
});

test("payments failing 30% of the time: what is reserved is exactly what is charged", async () => {
	const faults = JSON.stringify([{ match: "payments.charge", abort: { percent: 30, code: 402, type: "LATTICE_PAYMENT_DECLINED", retryable: false } }]);
	await withShop({ LATTICE_FAULTS: faults }, async broker => {
		await stock(broker, "flaky-pay", 1000, 7);
		const orders = await Promise.all(Array.from({ length: 100 }, (_, i) => place(broker, "flaky-pay", 1 + (i % 3))));
		const declined = orders.filter(o => o.status === "cancelled");
		assert.ok(declined.length > 0 && declined.length < 100, `${declined.length} declined`);
		assert.ok(declined.every(o => o.reason?.type === "LATTICE_PAYMENT_DECLINED"));
		const audit = (await auditOrders(db, schema)).filter(o => orders.some(x => x.id === o.id));
		assertAllOrNothing(audit);
		const held = audit.filter(o => o.reservation === "reserved");
		const charged = audit.filter(o => o.charge === "charged");
		assert.deepEqual(held.map(o => o.id).sort(), charged.map(o => o.id).sort());
		assert.equal(
			charged.reduce((sum, o) => sum + o.amount, 0),
			held.reduce((sum, o) => sum + o.reservedQty * 7, 0)
		);
		await assertStockBalances(db, schema, "flaky-pay", 1000);
	});
});
