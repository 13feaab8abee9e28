import { test } from "node:test";
import assert from "node:assert/strict";
import { Errors, ServiceBroker, type Context } from "moleculer";
import { TimeoutMiddleware } from "../../../middlewares/timeout.middleware.ts";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { uniqueNamespace } from "../../support/cluster.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

function broker(opts: { requestTimeout?: number; nodeID?: string; namespace?: string; transporter?: "Fake" } = {}) {
	return new ServiceBroker({
		nodeID: opts.nodeID ?? "local",
		namespace: opts.namespace,
		transporter: opts.transporter,
		logger: false,
		requestTimeout: opts.requestTimeout ?? 100,
		// Only this middleware: Moleculer's own Timeout would race it.
		internalMiddlewares: false,
		middlewares: [TimeoutMiddleware({ resolutionMs: 5 })]
	});
}

const slowService = {
	name: "slow",
	actions: {
		wait: (ctx: Context<{ ms: number }>) => sleep(ctx.params.ms).then(() => `waited ${ctx.params.ms}`),
		patient: { timeout: 500, handler: (ctx: Context<{ ms: number }>) => sleep(ctx.params.ms).then(() => "patient") },
		fail: () => Promise.reject(new Errors.MoleculerClientError("no", 409, "NOPE"))
	}
};

test("a call past its deadline fails with RequestTimeoutError; one within it gets its answer", async () => {
	const b = broker();
	b.createService(slowService);
	await b.start();
	try {
		assert.equal(await b.call("slow.wait", { ms: 5 }), "waited 5");
		await assert.rejects(b.call("slow.wait", { ms: 400 }), (err: Errors.MoleculerError) => {
			assert.ok(err instanceof Errors.RequestTimeoutError);
			assert.equal(err.type, "REQUEST_TIMEOUT");
			assert.equal((err.data as { action: string }).action, "slow.wait");
			return true;
		});
		await assert.rejects(b.call("slow.fail"), { type: "NOPE" }, "errors pass through untouched");
	} finally {
		await b.stop();
	}
});

test("the action's timeout beats requestTimeout, the call's beats both, and 0 means none", async () => {
	const b = broker({ requestTimeout: 50 });
	b.createService(slowService);
	await b.start();
	try {
		assert.equal(await b.call("slow.patient", { ms: 150 }), "patient");
		await assert.rejects(b.call("slow.patient", { ms: 150 }, { timeout: 30 }), Errors.RequestTimeoutError);
		assert.equal(await b.call("slow.wait", { ms: 150 }, { timeout: 0 }), "waited 150");
	} finally {
		await b.stop();
	}
});

test("many calls with different timeouts expire each at its own deadline, in any order of start", async () => {
	const b = broker({ requestTimeout: 0 });
	b.createService(slowService);
	await b.start();
	try {
		const outcomes = await Promise.allSettled(
			[120, 20, 60, 20, 120].map((timeout, i) => b.call("slow.wait", { ms: i === 4 ? 10 : 300 }, { timeout }))
		);
		assert.deepEqual(
			outcomes.map(o => o.status),
			["rejected", "rejected", "rejected", "rejected", "fulfilled"]
		);
	} finally {
		await b.stop();
	}
});

test("a remote call carries its deadline: it times out on the caller and on the serving node", async () => {
	const namespace = uniqueNamespace("timeout");
	const server = broker({ nodeID: "server", namespace, transporter: "Fake", requestTimeout: 0 });
	const client = broker({ nodeID: "client", namespace, transporter: "Fake", requestTimeout: 50 });
	server.createService(slowService);
	await Promise.all([server.start(), client.start()]);
	try {
		await client.waitForServices("slow", 5000);
		// The server was given no timeout of its own: the one it applies came with the request. Whichever side
		// expires first answers, as with Moleculer's own middleware.
		await assert.rejects(client.call("slow.wait", { ms: 300 }), (err: Errors.MoleculerError) => {
			assert.equal(err.type, "REQUEST_TIMEOUT");
			assert.equal((err.data as { action: string }).action, "slow.wait");
			return true;
		});
		assert.equal(await client.call("slow.wait", { ms: 1 }), "waited 1");
	} finally {
		await Promise.all([client.stop(), server.stop()]);
	}
});

test("memory follows the calls in flight even when the event loop never lets the timer run", async () => {
	const b = broker({ requestTimeout: 10_000 });
	b.createService({ name: "fast", actions: { ok: () => 1, hang: () => new Promise(() => undefined) } });
	await b.start();
	try {
		// One call that never ends sits at the head of the queue; the calls behind it resolve in microtasks, so the
		// loop never reaches the timer during the burst. Without sweeping, every settled call would stay queued.
		void b.call("fast.hang", { pad: "x".repeat(1000) }).catch(() => undefined);
		gc();
		const before = process.memoryUsage().heapUsed;
		for (let i = 0; i < 300_000; i++) await b.call("fast.ok", { pad: "x".repeat(200) + i });
		gc();
		const grownMiB = (process.memoryUsage().heapUsed - before) / 1_048_576;
		assert.ok(grownMiB < 8, `heap grew ${grownMiB.toFixed(1)} MiB over 300,000 settled calls`);
	} finally {
		await b.stop();
	}
});

test("a remote call that times out is released on the caller: no pending request, nothing left for shutdown to drain", async () => {
	const namespace = uniqueNamespace("timeout");
	// A server that never answers in time and applies no deadline of its own, as a hung or partitioned node would.
	const server = new ServiceBroker({ nodeID: "server", namespace, transporter: "Fake", logger: false, internalMiddlewares: false });
	const client = new ServiceBroker({
		nodeID: "client",
		namespace,
		transporter: "Fake",
		logger: false,
		requestTimeout: 50,
		tracking: { enabled: true, shutdownTimeout: 10_000 },
		internalMiddlewares: false,
		// As in Lattice's list: the timeout wraps the context tracker.
		middlewares: ["ContextTracker", TimeoutMiddleware({ resolutionMs: 5 })]
	});
	server.createService(slowService);
	await Promise.all([server.start(), client.start()]);
	try {
		await client.waitForServices("slow", 5000);
		await assert.rejects(client.call("slow.wait", { ms: 1000 }), { type: "REQUEST_TIMEOUT" });
		const transit = client.transit as unknown as { pendingRequests: Map<string, unknown> };
		assert.equal(transit.pendingRequests.size, 0, "the transit still waits for the answer");
		assert.equal((client as unknown as { _trackedContexts: unknown[] })._trackedContexts.length, 0, "the call still counts as in flight");
	} finally {
		await Promise.all([client.stop(), server.stop()]);
	}
});
