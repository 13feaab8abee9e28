import { test } from "node:test";
import assert from "node:assert/strict";
import type { ServiceBroker, ServiceSchema } from "moleculer";
import { createBroker } from "../../support/cluster.ts";

function counterService(calls: { n: number }, delayMs = 0): ServiceSchema {
	return {
		name: "s",
		actions: {
			get: {
				public: true,
				cache: { keys: ["id"] },
				params: { id: "string" },
				async handler(ctx) {
					calls.n++;
					if (delayMs) await new Promise(r => setTimeout(r, delayMs));
					return { id: ctx.params.id, n: calls.n };
				}
			},
			uncached: { public: true, handler: () => ++calls.n }
		}
	};
}

async function withBroker(env: Record<string, string>, svc: ServiceSchema, fn: (b: ServiceBroker) => Promise<void>) {
	const broker = await createBroker(env, [svc]);
	try {
		await fn(broker);
	} finally {
		await broker.stop();
	}
}

test("a repeated read is answered from L1 without calling the handler", async () => {
	const calls = { n: 0 };
	await withBroker({}, counterService(calls), async broker => {
		const a = await broker.call("s.get", { id: "a" });
		const b = await broker.call("s.get", { id: "a" });
		assert.deepEqual(a, b);
		assert.equal(calls.n, 1);
		await broker.call("s.get", { id: "b" });
		assert.equal(calls.n, 2, "another key is another entry");
	});
});

test("concurrent misses on one key share a single handler call (stampede lock)", async () => {
	const calls = { n: 0 };
	await withBroker({}, counterService(calls, 30), async broker => {
		const results = await Promise.all(Array.from({ length: 50 }, () => broker.call("s.get", { id: "hot" })));
		assert.equal(calls.n, 1);
		assert.ok(results.every(r => (r as { n: number }).n === 1));
	});
});

test("clean() drops matching entries; ctx.meta.$cache=false bypasses the cache", async () => {
	const calls = { n: 0 };
	await withBroker({}, counterService(calls), async broker => {
		await broker.call("s.get", { id: "a" });
		await broker.cacher!.clean("s.**");
		await broker.call("s.get", { id: "a" });
		assert.equal(calls.n, 2);
		await broker.call("s.get", { id: "a" }, { meta: { $cache: false } });
		assert.equal(calls.n, 3);
		await broker.call("s.get", { id: "a" });
		assert.equal(calls.n, 3, "the bypass did not evict the entry");
	});
});

test("a fill that started before a clean is not stored (no stale value resurrected)", async () => {
	const calls = { n: 0 };
	await withBroker({}, counterService(calls, 50), async broker => {
		const slow = broker.call("s.get", { id: "a" });
		await new Promise(r => setTimeout(r, 10));
		await broker.cacher!.clean("s.**");
		await slow;
		await broker.call("s.get", { id: "a" });
		assert.equal(calls.n, 2, "the in-flight result from before the clean was not cached");
	});
});

test("an unreachable Redis degrades to misses: requests still succeed", async () => {
	const calls = { n: 0 };
	await withBroker({ CACHER: "redis://127.0.0.1:1" }, counterService(calls), async broker => {
		for (let i = 0; i < 3; i++) assert.equal(((await broker.call("s.get", { id: "x" })) as { id: string }).id, "x");
		assert.ok(calls.n >= 1);
	});
});

test("uncached actions are not touched", async () => {
	const calls = { n: 0 };
	await withBroker({}, counterService(calls), async broker => {
		await broker.call("s.uncached");
		await broker.call("s.uncached");
		assert.equal(calls.n, 2);
	});
});
