import { test } from "node:test";
import assert from "node:assert/strict";
import { createBroker } from "../../support/cluster.ts";

test("smoke: in-process broker from Lattice config caches a read", async () => {
	let calls = 0;
	const broker = await createBroker({}, [
		{ name: "s", actions: { get: { cache: { keys: ["id"] }, params: { id: "string" }, handler: () => ++calls } } }
	]);
	try {
		assert.equal(await broker.call("s.get", { id: "a" }), 1);
		assert.equal(await broker.call("s.get", { id: "a" }), 1);
		assert.equal(calls, 1);
	} finally {
		await broker.stop();
	}
});
