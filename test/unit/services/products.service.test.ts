import { test } from "node:test";
import assert from "node:assert/strict";
import type { Errors, ServiceBroker } from "moleculer";
import ProductsService from "../../../services/products.service.ts";
import { createBroker } from "../../support/cluster.ts";

interface Product {
	id: string;
	name: string;
	price: number;
	stock: number;
}

async function withProducts(fn: (b: ServiceBroker) => Promise<void>) {
	const broker = await createBroker({}, [ProductsService]);
	try {
		await fn(broker);
	} finally {
		await broker.stop();
	}
}

test("starts with seed data and lists it", async () => {
	await withProducts(async broker => {
		const page = (await broker.call("products.list", {})) as { rows: Product[]; total: number };
		assert.equal(page.total, 3);
		assert.deepEqual(Object.keys(page.rows[0]!).sort(), ["id", "name", "price", "stock", "version"]);
	});
});

test("create, get, update, remove round trip; reads reflect writes at once (cache invalidated)", async () => {
	await withProducts(async broker => {
		const created = (await broker.call("products.create", { name: "  Kettle ", price: 39 })) as Product;
		assert.equal(created.name, "Kettle", "names are trimmed");
		assert.equal(created.stock, 0, "stock defaults to 0");
		assert.deepEqual(await broker.call("products.get", { id: created.id }), created);
		const updated = (await broker.call("products.update", { id: created.id, price: 35 })) as Product;
		assert.equal(updated.price, 35);
		assert.equal(((await broker.call("products.get", { id: created.id })) as Product).price, 35);
		await broker.call("products.remove", { id: created.id });
		await assert.rejects(broker.call("products.get", { id: created.id }), (e: Errors.MoleculerError) => e.code === 404);
	});
});

test("bad input is a 422 validation error naming the field, and unknown fields are refused", async () => {
	await withProducts(async broker => {
		const cases: [Record<string, unknown>, string][] = [
			[{ price: 1 }, "name"],
			[{ name: "x", price: -1 }, "price"],
			[{ name: "x", price: "cheap" }, "price"],
			[{ name: "x", price: 1, stock: 1.5 }, "stock"],
			[{ name: "", price: 1 }, "name"],
			[{ name: "x", price: 1, admin: true }, ""]
		];
		for (const [params, field] of cases) {
			await assert.rejects(
				broker.call("products.create", params),
				(e: Errors.MoleculerError) =>
					e.code === 422 && e.type === "VALIDATION_ERROR" && (e.data as { field: string }[]).some(d => d.field === field || (field === "" && /forbidden/.test(JSON.stringify(d)))),
				JSON.stringify(params)
			);
		}
		const total = ((await broker.call("products.list", {})) as { total: number }).total;
		assert.equal(total, 3, "nothing was stored by rejected calls");
	});
});

test("updating or removing a missing product is a 404", async () => {
	await withProducts(async broker => {
		await assert.rejects(broker.call("products.update", { id: "missing", price: 1 }), (e: Errors.MoleculerError) => e.code === 404);
		await assert.rejects(broker.call("products.remove", { id: "missing" }), (e: Errors.MoleculerError) => e.code === 404);
	});
});

test("in memory too, an update naming a stale version is a 409 and changes nothing", async () => {
	await withProducts(async broker => {
		const p = (await broker.call("products.create", { name: "Jug", price: 9 })) as Product & { version: number };
		assert.equal(p.version, 1);
		const u = (await broker.call("products.update", { id: p.id, price: 10, version: 1 })) as Product & { version: number };
		assert.equal(u.version, 2);
		await assert.rejects(
			broker.call("products.update", { id: p.id, price: 11, version: 1 }),
			(e: Errors.MoleculerError) => e.code === 409 && e.type === "LATTICE_VERSION_CONFLICT"
		);
		assert.equal(((await broker.call("products.get", { id: p.id })) as Product).price, 10);
	});
});
