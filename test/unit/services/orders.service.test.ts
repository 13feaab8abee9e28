import { test } from "node:test";
import assert from "node:assert/strict";
import type { Context, Errors, ServiceBroker, ServiceSchema } from "moleculer";
import type { ChannelsSchema } from "../../../lib/channels/channel.ts";
import InventoryService from "../../../services/inventory.service.ts";
import OrdersService from "../../../services/orders.service.ts";
import PaymentsService from "../../../services/payments.service.ts";
import { ADMIN, asUser, READER } from "../../support/auth.ts";
import { createBroker } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";

/** The example shop without a database: sagas, stock and payments in memory. */

interface Order {
	id: string;
	status: string;
	amount?: number;
	reason?: { step: string; type: string } | null;
}

/** A downstream consumer of the confirmed-orders channel. */
const shipped: string[] = [];
const Shipping: ServiceSchema & { channels: ChannelsSchema } = {
	name: "shipping",
	channels: {
		"orders.confirmed"(ctx: Context<Order>) {
			shipped.push(ctx.params.id);
		}
	}
};

async function withShop(fn: (b: ServiceBroker) => Promise<void>, env: Record<string, string> = {}) {
	const broker = await createBroker(env, [OrdersService, InventoryService, PaymentsService, Shipping]);
	try {
		await fn(broker);
	} finally {
		await broker.stop();
	}
}

const AS_ADMIN = asUser(ADMIN);

test("an order is confirmed, charged at the item's price, and takes its stock", async () => {
	await withShop(async broker => {
		const order = (await broker.call("orders.create", { sku: "milk-jug", qty: 2 }, AS_ADMIN)) as Order;
		assert.equal(order.status, "confirmed");
		assert.equal(order.amount, 29.8);
		assert.equal(((await broker.call("inventory.get", { sku: "milk-jug" })) as { available: number }).available, 73);
		assert.equal(((await broker.call("orders.get", { id: order.id }, AS_ADMIN)) as Order).status, "confirmed");
		await waitFor(() => shipped.includes(order.id), 2000, "the confirmation on its channel");
	});
});

test("an order for more than is in stock is cancelled with the reason, and the stock is untouched", async () => {
	await withShop(async broker => {
		const order = (await broker.call("orders.create", { sku: "burr-grinder", qty: 13 }, AS_ADMIN)) as Order;
		assert.equal(order.status, "cancelled");
		assert.deepEqual(order.reason && [order.reason.step, order.reason.type], ["reserve", "LATTICE_OUT_OF_STOCK"]);
		assert.equal(((await broker.call("inventory.get", { sku: "burr-grinder" })) as { available: number }).available, 12);
		assert.ok(!shipped.includes(order.id), "a cancelled order is not announced");
	});
});

test("a payment failure releases the reservation", async () => {
	const faults = JSON.stringify([{ match: "payments.charge", abort: { code: 402, type: "LATTICE_PAYMENT_DECLINED", retryable: false } }]);
	await withShop(
		async broker => {
			const order = (await broker.call("orders.create", { sku: "espresso-beans", qty: 4 }, AS_ADMIN)) as Order;
			assert.equal(order.status, "cancelled");
			assert.equal(order.reason?.type, "LATTICE_PAYMENT_DECLINED");
			assert.equal(((await broker.call("inventory.get", { sku: "espresso-beans" })) as { available: number }).available, 40);
		},
		{ LATTICE_FAULTS: faults }
	);
});

test("the same idempotency key from the same user is one order; from another user it is another", async () => {
	await withShop(async broker => {
		const a = (await broker.call("orders.create", { sku: "milk-jug", qty: 1, idempotencyKey: "k1" }, AS_ADMIN)) as Order;
		const b = (await broker.call("orders.create", { sku: "milk-jug", qty: 1, idempotencyKey: "k1" }, AS_ADMIN)) as Order;
		const other = asUser({ ...ADMIN, id: "admin-2" });
		const c = (await broker.call("orders.create", { sku: "milk-jug", qty: 1, idempotencyKey: "k1" }, other)) as Order;
		assert.equal(a.id, b.id);
		assert.notEqual(a.id, c.id);
		assert.equal(((await broker.call("inventory.get", { sku: "milk-jug" })) as { available: number }).available, 73);
	});
});

test("access: placing and reading orders need permissions; the saga's own steps are closed to users", async () => {
	await withShop(async broker => {
		const denied = (code: number) => (e: Errors.MoleculerError) => e.code === code;
		await assert.rejects(broker.call("orders.create", { sku: "milk-jug", qty: 1 }, asUser(READER)), denied(403));
		await assert.rejects(broker.call("orders.list", {}, asUser(READER)), denied(403));
		await assert.rejects(broker.call("inventory.reserve", { key: "k", sku: "milk-jug", qty: 1 }, AS_ADMIN), denied(403));
		await assert.rejects(broker.call("payments.charge", { key: "k", orderId: "o", amount: 1 }, AS_ADMIN), denied(403));
		await assert.rejects(broker.call("orders.confirm", { id: "x", amount: 1 }, AS_ADMIN), denied(403));
		await assert.rejects(broker.call("orders.update", { id: "x", status: "confirmed" }, AS_ADMIN), (e: Errors.MoleculerError) => e.name === "ServiceNotFoundError");
	});
});
