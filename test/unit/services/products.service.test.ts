import { test } from "node:test";
import assert from "node:assert/strict";
import type { Errors, ServiceBroker } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import ProductsService from "../../../services/products.service.ts";
import { asUser, EDITOR, READER } from "../../support/auth.ts";
import { createBroker } from "../../support/cluster.ts";

/** Writes need `products:write`; reads are public. */
const AS_EDITOR = asUser(EDITOR);

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
		const created = (await broker.call("products.create", { name: "  Kettle ", price: 39 }, AS_EDITOR)) as Product;
		assert.equal(created.name, "Kettle", "names are trimmed");
		assert.equal(created.stock, 0, "stock defaults to 0");
		assert.deepEqual(await broker.call("products.get", { id: created.id }), created);
		const updated = (await broker.call("products.update", { id: created.id, price: 35 }, AS_EDITOR)) as Product;
		assert.equal(updated.price, 35);
		assert.equal(((await broker.call("products.get", { id: created.id })) as Product).price, 35);
		await broker.call("products.remove", { id: created.id }, AS_EDITOR);
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
				broker.call("products.create", params, AS_EDITOR),
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
		await assert.rejects(broker.call("products.update", { id: "missing", price: 1 }, AS_EDITOR), (e: Errors.MoleculerError) => e.code === 404);
		await assert.rejects(broker.call("products.remove", { id: "missing" }, AS_EDITOR), (e: Errors.MoleculerError) => e.code === 404);
	});
});

test("in memory too, an update naming a stale version is a 409 and changes nothing", async () => {
	await withProducts(async broker => {
		const p = (await broker.call("products.create", { name: "Jug", price: 9 }, AS_EDITOR)) as Product & { version: number };
		assert.equal(p.version, 1);
		const u = (await broker.call("products.update", { id: p.id, price: 10, version: 1 }, AS_EDITOR)) as Product & { version: number };
		assert.equal(u.version, 2);
		await assert.rejects(
			broker.call("products.update", { id: p.id, price: 11, version: 1 }, AS_EDITOR),
			(e: Errors.MoleculerError) => e.code === 409 && e.type === "LATTICE_VERSION_CONFLICT"
		);
		assert.equal(((await broker.call("products.get", { id: p.id })) as Product).price, 10);
	});
});

test("reads are public; writes need products:write (anonymous 401, without it 403), whoever calls", async () => {
	await withProducts(async broker => {
		assert.equal(((await broker.call("products.list", {})) as { total: number }).total, 3);
		const refused = (code: number) => (e: Errors.MoleculerError) => e.code === code && e.type === (code === 401 ? ErrorType.UNAUTHORIZED : ErrorType.FORBIDDEN);
		await assert.rejects(broker.call("products.create", { name: "x", price: 1 }), refused(401));
		await assert.rejects(broker.call("products.create", { name: "x", price: 1 }, asUser(READER)), refused(403));
		await assert.rejects(broker.call("products.insert", { entity: { name: "x", price: 1 } }, asUser(READER)), refused(403));
		await assert.rejects(broker.call("products.remove", { id: "missing" }, { caller: "reports" }), refused(403), "a service without a grant");
		assert.equal(((await broker.call("products.list", {})) as { total: number }).total, 3, "nothing was written");
	});
});

test("public reads take plain equality queries only: operators and non-JSON queries are 400s, not adapter errors", async () => {
	await withProducts(async broker => {
		const page = (await broker.call("products.list", { query: JSON.stringify({ name: "Burr grinder" }) })) as { rows: Product[] };
		assert.deepEqual(page.rows.map(p => p.name), ["Burr grinder"]);
		for (const query of ['{"$where":"sleep(1000)"}', { price: { $gt: 1 } }, { $or: [{ price: 1 }] }, "{not json", "[]"]) {
			await assert.rejects(
				broker.call("products.list", { query }),
				(e: Errors.MoleculerError) => e.code === 400 && e.type === ErrorType.BAD_REQUEST,
				JSON.stringify(query)
			);
		}
	});
});
