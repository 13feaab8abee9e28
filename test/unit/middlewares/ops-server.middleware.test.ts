import { test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker } from "moleculer";
import { Registry } from "prom-client";
import { OpsServerMiddleware } from "../../../middlewares/ops-server.middleware.ts";
import { MetricsMiddleware } from "../../../middlewares/metrics.middleware.ts";
import { freePort } from "../../support/processes.ts";

async function setup() {
	const registry = new Registry();
	const port = await freePort();
	const ops = OpsServerMiddleware({ port, host: "127.0.0.1", registry });
	let release!: () => void;
	const gate = new Promise<void>(r => (release = r));
	const broker = new ServiceBroker({
		logger: false,
		middlewares: [ops, MetricsMiddleware({ registry })],
		// A service that holds the broker in "starting" until released, so the test can look at /ready meanwhile.
		created(b) {
			b.createService({ name: "slow", started: () => gate, actions: { hi: () => "hi", fail: () => Promise.reject(new Error("boom")) } });
		}
	});
	const base = `http://127.0.0.1:${port}`;
	return { broker, base, release };
}

test("/live answers from the start; /ready is 503 until started and again once stopping begins", async () => {
	const { broker, base, release } = await setup();
	const starting = broker.start();
	const probe = async (path: string) => {
		for (let i = 0; i < 100; i++) {
			try {
				return await fetch(base + path);
			} catch {
				await new Promise(r => setTimeout(r, 20));
			}
		}
		throw new Error("ops server never listened");
	};
	assert.equal((await probe("/live")).status, 200);
	const before = await probe("/ready");
	assert.equal(before.status, 503);
	assert.match(((await before.json()) as { reasons: string[] }).reasons.join(), /starting/);
	release();
	await starting;
	assert.equal((await fetch(base + "/ready")).status, 200);

	let duringStop = 0;
	broker.createService({ name: "probe", stopped: async () => { duringStop = (await fetch(base + "/ready")).status; } });
	await broker.stop();
	assert.equal(duringStop, 503);
	await assert.rejects(fetch(base + "/live"), "the server is closed after the broker stops");
});

test("/metrics exposes default process metrics and per-action RED metrics", async () => {
	const { broker, base, release } = await setup();
	release();
	await broker.start();
	try {
		await broker.call("slow.hi");
		await broker.call("slow.hi");
		await assert.rejects(broker.call("slow.fail"));
		const res = await fetch(base + "/metrics");
		assert.equal(res.status, 200);
		assert.match(res.headers.get("content-type") ?? "", /text\/plain/);
		const text = await res.text();
		assert.match(text, /^process_cpu_user_seconds_total /m);
		assert.match(text, /^nodejs_eventloop_lag_seconds /m);
		assert.match(text, /^moleculer_request_total\{action="slow.hi",outcome="success"\} 2$/m);
		assert.match(text, /^moleculer_request_total\{action="slow.fail",outcome="error"\} 1$/m);
		assert.match(text, /^moleculer_request_error_total\{action="slow.fail",type="Error"\} 1$/m);
		assert.match(text, /^moleculer_request_duration_seconds_bucket\{le="0.0001",action="slow.hi"\} \d+$/m);
	} finally {
		await broker.stop();
	}
});

test("unknown paths are 404 JSON and other methods 405", async () => {
	const { broker, base, release } = await setup();
	release();
	await broker.start();
	try {
		const nf = await fetch(base + "/nope");
		assert.equal(nf.status, 404);
		assert.equal(((await nf.json()) as { code: number }).code, 404);
		assert.equal((await fetch(base + "/ready", { method: "POST" })).status, 405);
	} finally {
		await broker.stop();
	}
});

test("port 0 disables the server", async () => {
	const registry = new Registry();
	const ops = OpsServerMiddleware({ port: 0, registry });
	const broker = new ServiceBroker({ logger: false, middlewares: [ops] });
	await broker.start();
	assert.equal(ops.address(), null);
	await broker.stop();
});
