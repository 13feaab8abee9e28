import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Errors, ServiceBroker, type ActionSchema, type Context } from "moleculer";
import { Registry } from "prom-client";
import { ErrorType } from "../../../lib/errors.ts";
import { LoadSheddingMiddleware, type LoadSheddingOptions } from "../../../middlewares/load-shedding.middleware.ts";
import { buildConfig } from "../../../moleculer.config.ts";
import { metricValue } from "../../support/cluster.ts";

/** A broker whose `gate.hold` calls wait until the test opens the gate (for good); `order` records who got to run. */
async function setup(opts: LoadSheddingOptions) {
	const registry = new Registry();
	const order: number[] = [];
	let open!: () => void;
	const gate = new Promise<void>(r => (open = r));
	const b = new ServiceBroker({ logger: false, skipProcessEventRegistration: true, middlewares: [LoadSheddingMiddleware({ ...opts, registry })] });
	b.createService({
		name: "gate",
		actions: {
			hold: {
				handler: async (ctx: Context<{ n: number }>) => {
					order.push(ctx.params.n);
					await gate;
					return ctx.params.n;
				}
			},
			outer: { handler: (ctx: Context) => ctx.call("gate.inner") },
			inner: { handler: () => "inner" }
		}
	});
	await b.start();
	return {
		b,
		registry,
		order,
		release: () => open()
	};
}

const tick = () => new Promise(r => setTimeout(r, 10));

describe("load shedding middleware", () => {
	test("concurrency 0 leaves handlers unwrapped", () => {
		const handler = () => Promise.resolve(1);
		assert.equal(LoadSheddingMiddleware({ concurrency: 0 }).localAction(handler, { name: "a.b" } as ActionSchema), handler);
	});

	test("beyond the limit and a full queue, a request is refused at once with a retryable 503 LATTICE_OVERLOADED", async () => {
		const { b, registry, order, release } = await setup({ concurrency: 2, maxQueue: 1, maxQueueTime: 0 });
		try {
			const running = [1, 2, 3].map(n => b.call("gate.hold", { n }));
			await tick();
			assert.deepEqual(order, [1, 2], "two run, the third waits");
			assert.equal(metricValue(await registry.metrics(), "lattice_load_queued"), 1);
			await assert.rejects(b.call("gate.hold", { n: 4 }), (err: Errors.MoleculerError) => {
				assert.equal(err.code, 503);
				assert.equal(err.type, ErrorType.OVERLOADED);
				assert.equal(err.retryable, true);
				assert.match(err.message, /overloaded \(queue full\)/);
				return true;
			});
			release();
			assert.deepEqual(await Promise.all(running), [1, 2, 3]);
			assert.deepEqual(order, [1, 2, 3], "the queued request ran once a slot was free");
			const text = await registry.metrics();
			assert.equal(metricValue(text, "lattice_load_shed_total", { reason: "queue_full" }), 1);
			assert.equal(metricValue(text, "lattice_load_active"), 0, "every slot is given back");
			assert.equal(metricValue(text, "lattice_load_queued"), 0);
		} finally {
			await b.stop();
		}
	});

	test("the queue is served first in, first out", async () => {
		const { b, order, release } = await setup({ concurrency: 1, maxQueue: 10, maxQueueTime: 0 });
		try {
			const calls = [1, 2, 3, 4, 5].map(n => b.call("gate.hold", { n }));
			await tick();
			assert.deepEqual(order, [1]);
			release();
			await Promise.all(calls);
			assert.deepEqual(order, [1, 2, 3, 4, 5]);
		} finally {
			await b.stop();
		}
	});

	test("a request that waits longer than maxQueueTime is refused", async () => {
		const { b, registry, order, release } = await setup({ concurrency: 1, maxQueue: 10, maxQueueTime: 50 });
		try {
			const first = b.call("gate.hold", { n: 1 });
			await tick();
			await assert.rejects(b.call("gate.hold", { n: 2 }), { type: ErrorType.OVERLOADED, message: /queue wait timed out/ });
			release();
			assert.equal(await first, 1);
			assert.deepEqual(order, [1], "the refused request never ran");
			assert.equal(await b.call("gate.hold", { n: 3 }), 3, "the timed-out waiter left no slot or queue entry behind");
			assert.equal(metricValue(await registry.metrics(), "lattice_load_shed_total", { reason: "queue_timeout" }), 1);
		} finally {
			await b.stop();
		}
	});

	test("a handler that throws synchronously or rejects gives its slot back", async () => {
		const b = new ServiceBroker({ logger: false, skipProcessEventRegistration: true, middlewares: [LoadSheddingMiddleware({ concurrency: 1, maxQueue: 0 })] });
		b.createService({
			name: "bad",
			actions: {
				reject: () => Promise.reject(new Error("no")),
				ok: () => "ok"
			}
		});
		await b.start();
		try {
			for (let i = 0; i < 3; i++) await assert.rejects(b.call("bad.reject"), /no/);
			assert.equal(await b.call("bad.ok"), "ok");
		} finally {
			await b.stop();
		}
	});

	test("nested calls from a running action do not queue behind it", async () => {
		const { b } = await setup({ concurrency: 1, maxQueue: 0, maxQueueTime: 0 });
		try {
			assert.equal(await b.call("gate.outer"), "inner");
		} finally {
			await b.stop();
		}
	});
});

describe("load shedding in the config", () => {
	test("is in the middleware list, configured from LATTICE_CONCURRENCY_LIMIT / _QUEUE_LIMIT / _QUEUE_TIMEOUT", () => {
		const names = (buildConfig({}).middlewares as { name?: string }[]).map(m => m.name);
		assert.ok(names.includes("LoadShedding"));
		for (const name of ["LATTICE_CONCURRENCY_LIMIT", "LATTICE_QUEUE_LIMIT", "LATTICE_QUEUE_TIMEOUT"]) {
			assert.throws(() => buildConfig({ [name]: "-1" }), { type: ErrorType.CONFIG_INVALID }, name);
		}
		assert.doesNotThrow(() => buildConfig({ LATTICE_CONCURRENCY_LIMIT: "0", LATTICE_QUEUE_LIMIT: "10", LATTICE_QUEUE_TIMEOUT: "0" }));
	});

	test("an overloaded node's errors do not trip callers' circuit breakers; other server errors do", () => {
		const check = buildConfig({}).circuitBreaker!.check!;
		assert.equal(check(new Errors.MoleculerRetryableError("x", 503, ErrorType.OVERLOADED) as never), false);
		assert.equal(check(new Errors.MoleculerRetryableError("x", 503, "SERVICE_NOT_AVAILABLE") as never), true);
		assert.equal(check(new Errors.MoleculerClientError("x", 422, "VALIDATION_ERROR") as never), false);
	});
});
