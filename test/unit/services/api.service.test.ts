import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import type { ServiceBroker } from "moleculer";
import ApiService from "../../../services/api.service.ts";
import ProductsService from "../../../services/products.service.ts";
import { createBroker } from "../../support/cluster.ts";

let broker: ServiceBroker;
let base: string;

before(async () => {
	broker = await createBroker({}, [ApiService, ProductsService]);
	const server = (broker.getLocalService("api") as unknown as { server: Server }).server;
	base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api`;
});
after(() => broker.stop());

async function json(res: Response) {
	assert.match(res.headers.get("content-type") ?? "", /application\/json/);
	return (await res.json()) as Record<string, unknown>;
}

test("GET /api/products lists the catalog with a request id", async () => {
	const res = await fetch(`${base}/products`);
	assert.equal(res.status, 200);
	assert.ok(res.headers.get("x-request-id"));
	assert.equal((await json(res)).total, 3);
});

test("REST create/update/delete work end to end", async () => {
	const created = await fetch(`${base}/products`, {
		method: "POST",
		headers: { "content-type": "application/json" },
		body: JSON.stringify({ name: "Scale", price: 49 })
	});
	assert.equal(created.status, 200);
	const p = await json(created);
	const upd = await fetch(`${base}/products/${p.id}`, {
		method: "PATCH",
		headers: { "content-type": "application/json" },
		body: JSON.stringify({ stock: 5 })
	});
	assert.equal((await json(upd)).stock, 5);
	assert.equal((await fetch(`${base}/products/${p.id}`, { method: "DELETE" })).status, 200);
	assert.equal((await fetch(`${base}/products/${p.id}`)).status, 404);
});

test("only aliased actions are reachable: $node, unaliased and unknown paths are 404 JSON", async () => {
	for (const path of ["/$node/list", "/~node/list", "/products/list", "/products.list", "/nope", "/../products"]) {
		const res = await fetch(`${base}${path}`);
		assert.equal(res.status, 404, path);
		const body = await json(res);
		assert.equal(body.code, 404);
		assert.ok(res.headers.get("x-request-id"), "errors carry a request id too");
	}
});

test("malformed JSON is a 400 JSON error; invalid fields a 422 naming them; no stack anywhere", async () => {
	const bad = await fetch(`${base}/products`, { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" });
	assert.equal(bad.status, 400);
	const body = await json(bad);
	assert.equal(body.stack, undefined);
	assert.equal(typeof body.type, "string");

	const invalid = await fetch(`${base}/products`, {
		method: "POST",
		headers: { "content-type": "application/json" },
		body: JSON.stringify({ name: 1, price: "x", isAdmin: true })
	});
	assert.equal(invalid.status, 422);
	const err = await json(invalid);
	assert.equal(err.type, "VALIDATION_ERROR");
	assert.equal(err.stack, undefined);
});

test("bodies over the limit are refused with 413", async () => {
	const res = await fetch(`${base}/products`, {
		method: "POST",
		headers: { "content-type": "application/json" },
		body: JSON.stringify({ name: "x".repeat(300_000), price: 1 })
	});
	assert.equal(res.status, 413);
	assert.equal((await json(res)).code, 413);
});

test("a sane caller request id is echoed; an insane one is replaced", async () => {
	const ok = await fetch(`${base}/products`, { headers: { "x-request-id": "abc-123" } });
	assert.equal(ok.headers.get("x-request-id"), "abc-123");
	const weird = await fetch(`${base}/products`, { headers: { "x-request-id": "a".repeat(500) } });
	assert.notEqual(weird.headers.get("x-request-id"), "a".repeat(500));
});
