import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import type { Errors, ServiceBroker, ServiceSchema } from "moleculer";
import ProductsService from "../../../services/products.service.ts";
import { asUser, EDITOR } from "../../support/auth.ts";
import { createBroker, NATS_URL, uniqueNamespace } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = `t_${uniqueNamespace("db").replace(/-/g, "_")}`;
const env = { DATABASE_URL, LATTICE_DB_SCHEMA: schema };
/** Writes need `products:write` (services/products.service.ts). */
const AS_EDITOR = asUser(EDITOR);

interface Product {
	id: string;
	name: string;
	price: number;
	stock: number;
	version: number;
}

let admin: pg.Client;
before(async () => {
	admin = new pg.Client({ connectionString: DATABASE_URL });
	await admin.connect();
});
after(async () => {
	await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
	await admin.end();
});

async function withBroker(extra: Record<string, string>, services: Parameters<typeof createBroker>[1], fn: (b: ServiceBroker) => Promise<void>) {
	const broker = await createBroker({ ...env, ...extra }, services);
	try {
		await fn(broker);
	} finally {
		await broker.stop();
	}
}

test("on PostgreSQL: migrations create the table once, seed data lands, CRUD works", async () => {
	await withBroker({}, [ProductsService], async broker => {
		const { rows } = await admin.query(`SELECT step FROM ${schema}.lattice_migrations WHERE collection = 'products' ORDER BY step`);
		assert.deepEqual(rows.map(r => r.step), [0, 1]);
		const page = (await broker.call("products.list", { sort: "-price" })) as { rows: Product[]; total: number };
		assert.equal(page.total, 3);
		assert.deepEqual(page.rows.map(r => r.price), [129, 24.5, 14.9], "sorted by price descending, numerically");

		const p = (await broker.call("products.create", { name: "Tamper", price: 30, stock: 2 }, AS_EDITOR)) as Product;
		assert.equal(p.version, 1);
		const { rows: stored } = await admin.query(`SELECT doc, version FROM ${schema}.products WHERE id = $1`, [p.id]);
		assert.deepEqual(stored[0].doc, { name: "Tamper", price: 30, stock: 2 });

		const found = (await broker.call("products.find", { query: { name: "Tamper" } })) as Product[];
		assert.deepEqual(found.map(f => f.id), [p.id]);
		const searched = (await broker.call("products.list", { search: "grind", searchFields: "name" })) as { rows: Product[] };
		assert.deepEqual(searched.rows.map(r => r.name), ["Burr grinder"]);

		const u = (await broker.call("products.update", { id: p.id, stock: 1 }, AS_EDITOR)) as Product;
		assert.equal(u.stock, 1);
		assert.equal(u.version, 2);
		await broker.call("products.remove", { id: p.id }, AS_EDITOR);
		await assert.rejects(broker.call("products.get", { id: p.id }), (e: Errors.MoleculerError) => e.code === 404);
	});
	// A second start runs no migration again and does not reseed.
	await withBroker({}, [ProductsService], async broker => {
		assert.equal(((await broker.call("products.list", {})) as { total: number }).total, 3);
		const { rows } = await admin.query(`SELECT count(*)::int AS n FROM ${schema}.lattice_migrations`);
		assert.equal(rows[0].n, 2);
	});
});

test("optimistic concurrency: of concurrent updates naming the same version exactly one wins, the rest get 409", async () => {
	await withBroker({}, [ProductsService], async broker => {
		const p = (await broker.call("products.create", { name: "Cup", price: 5, stock: 100 }, AS_EDITOR)) as Product;
		const results = await Promise.allSettled(
			Array.from({ length: 10 }, (_, i) => broker.call("products.update", { id: p.id, stock: i, version: p.version }, AS_EDITOR))
		);
		const ok = results.filter(r => r.status === "fulfilled");
		const conflicts = results.filter(
			r => r.status === "rejected" && (r.reason as Errors.MoleculerError).code === 409 && (r.reason as Errors.MoleculerError).type === "LATTICE_VERSION_CONFLICT"
		);
		assert.equal(ok.length, 1);
		assert.equal(conflicts.length, 9);
		const now = (await broker.call("products.get", { id: p.id })) as Product;
		assert.equal(now.version, 2);
		await assert.rejects(broker.call("products.update", { id: "nope", stock: 1, version: 1 }, AS_EDITOR), (e: Errors.MoleculerError) => e.code === 404);
	});
});

test("unsupported query operators and sort fields are 400 client errors, not SQL errors", async () => {
	await withBroker({}, [ProductsService], async broker => {
		await assert.rejects(broker.call("products.find", { query: { price: { $gt: 1 } } }), (e: Errors.MoleculerError) => e.code === 400);
		await assert.rejects(broker.call("products.list", { sort: "price; DROP TABLE x" }), (e: Errors.MoleculerError) => e.code === 400);
		await assert.rejects(broker.call("products.find", { query: { "a'b": 1 } }), (e: Errors.MoleculerError) => e.code === 400);
	});
});

test("entity events are emitted and writes on one node invalidate cached reads on another", async () => {
	const ns = uniqueNamespace("db");
	const seen: string[] = [];
	const listener: ServiceSchema = {
		name: "listener",
		events: {
			"products.*"(ctx) {
				seen.push(String(ctx.eventName));
			}
		}
	};
	const cluster = { TRANSPORTER: NATS_URL, NAMESPACE: ns };
	const a = await createBroker({ ...env, ...cluster, NODEID: `${ns}-a` }, [ProductsService]);
	const b = await createBroker({ ...env, ...cluster, NODEID: `${ns}-b` }, [ProductsService, listener]);
	try {
		await waitFor(() => a.registry.nodes.has(`${ns}-b`) && b.registry.nodes.has(`${ns}-a`), 10_000, "discovery");
		const p = (await a.call("products.create", { name: "Filter", price: 3 }, AS_EDITOR)) as Product;
		// b caches the read in its own L1 …
		assert.equal(((await b.call("products.get", { id: p.id }, { nodeID: `${ns}-b` })) as Product).price, 3);
		// … a writes, and b's next read must see it.
		await a.call("products.update", { id: p.id, price: 4 }, { ...AS_EDITOR, nodeID: `${ns}-a` });
		await waitFor(
			async () => ((await b.call("products.get", { id: p.id }, { nodeID: `${ns}-b` })) as Product).price === 4,
			5_000,
			"b sees the new price"
		);
		await waitFor(() => seen.includes("products.created") && seen.includes("products.updated"), 5_000, "entity events");
	} finally {
		await a.stop();
		await b.stop();
	}
});
