import { test } from "node:test";
import assert from "node:assert/strict";
import { Errors, ServiceBroker, type Context } from "moleculer";
import { TimeoutMiddleware } from "../../../middlewares/timeout.middleware.ts";
import { uniqueNamespace } from "../../support/cluster.ts";

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
