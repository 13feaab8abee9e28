import { afterEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker, type Context } from "moleculer";
import { Registry } from "prom-client";
import { ErrorType } from "../../../lib/errors.ts";
import { FailoverMiddleware } from "../../../middlewares/failover.middleware.ts";
import { buildConfig } from "../../../moleculer.config.ts";
import { metricValue } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";

/**
 * Three brokers over Moleculer's in-process transporter: a caller with the failover middleware and two replicas
 * of `work`. Heartbeats are left at a minute, so anything noticed within seconds was noticed by the probes.
 */
const PROBE = { probeAfter: 200, probeTimeout: 300 };

interface Internals {
	transit: { messageHandler: (cmd: string, packet: unknown) => unknown };
	registry: { nodes: { get(id: string): { available: boolean } | undefined }; discoverer: { stopHeartbeatTimers(): void } };
}

const brokers: ServiceBroker[] = [];

function broker(nodeID: string, namespace: string, registry?: Registry): ServiceBroker {
	const b = new ServiceBroker({
		nodeID,
		namespace,
		transporter: "Fake",
		logger: false,
		skipProcessEventRegistration: true,
		heartbeatInterval: 30,
		heartbeatTimeout: 60,
		requestTimeout: 20_000,
		middlewares: registry ? [FailoverMiddleware({ ...PROBE, registry })] : []
	});
	brokers.push(b);
	return b;
}

function replica(nodeID: string, namespace: string, delay = 0): ServiceBroker {
	const b = broker(nodeID, namespace);
	b.createService({
		name: "work",
		actions: {
			do: {
				retryPolicy: { enabled: true, retries: 3, delay: 10 },
				handler: async (ctx: Context) => {
					if (delay) await new Promise(r => setTimeout(r, delay));
					return ctx.nodeID === nodeID ? "local" : nodeID;
				}
			},
			once: () => nodeID
		}
	});
	return b;
}

/** Silences a node the way kill -9 does: no more packets in or out, and no DISCONNECT. */
function freeze(b: ServiceBroker): void {
	const i = b as unknown as Internals;
	i.registry.discoverer.stopHeartbeatTimers();
	i.transit.messageHandler = () => true;
}

/** Makes a node drop incoming requests (and nothing else) while `lossy()` says so. */
function loseRequests(b: ServiceBroker, lossy: () => boolean): void {
	const transit = (b as unknown as Internals).transit;
	const handle = transit.messageHandler.bind(transit);
	transit.messageHandler = (cmd, packet) => (cmd === "REQ" && lossy() ? true : handle(cmd, packet));
}

async function cluster(delayOnB = 0) {
	const namespace = `failover-${Math.random().toString(36).slice(2, 8)}`;
	const registry = new Registry();
	const a = broker("a", namespace, registry);
	const b = replica("b", namespace, delayOnB);
	const c = replica("c", namespace);
	await Promise.all([a.start(), b.start(), c.start()]);
	await a.waitForServices("work");
	await waitFor(() => (a.registry.getServiceList({ onlyAvailable: true }) as { name: string }[]).filter(s => s.name === "work").length === 2);
	return { a, b, c, registry };
}

afterEach(async () => {
	await Promise.all(brokers.splice(0).map(b => b.stop().catch(() => undefined)));
});

describe("failover middleware", () => {
	test("a silent node is dropped within probeAfter + probeTimeout and its calls are retried on a live one", async () => {
		const { a, b, registry } = await cluster();
		freeze(b);
		const started = performance.now();
		const answers = await Promise.all(Array.from({ length: 20 }, () => a.call<string>("work.do")));
		const took = performance.now() - started;
		assert.deepEqual(new Set(answers), new Set(["c"]), "every call answered, all by the live replica");
		assert.equal((a as unknown as Internals).registry.nodes.get("b")?.available, false);
		assert.ok(took >= PROBE.probeAfter, "calls that went to the frozen node waited for the probe");
		assert.ok(took < 10_000, `dropped long before the 60 s heartbeat timeout (took ${Math.round(took)} ms)`);
		assert.equal(metricValue(await registry.metrics(), "lattice_failover_probes_total", { result: "dropped" }), 1);
		assert.equal(await a.call("work.do"), "c");
	});

	test("a node that is slow but answers pings stays", async () => {
		const { a, registry } = await cluster(PROBE.probeAfter * 4);
		const answers = await Promise.all(Array.from({ length: 6 }, () => a.call<string>("work.do")));
		assert.ok(answers.includes("b"), "the slow replica kept answering");
		assert.equal((a as unknown as Internals).registry.nodes.get("b")?.available, true);
		const text = await registry.metrics();
		assert.ok(metricValue(text, "lattice_failover_probes_total", { result: "alive" }) >= 1, "it was probed");
		assert.equal(metricValue(text, "lattice_failover_probes_total", { result: "dropped" }), 0);
	});

	test("after the link comes back, retry-safe requests still unanswered are re-sent; others are left to their timeout", async () => {
		const { a, b, registry } = await cluster();
		let lossy = true;
		loseRequests(b, () => lossy);
		const retrySafe = a.call<string, object>("work.do", {}, { nodeID: "b" });
		const unsafe = a.call<string, object>("work.once", {}, { nodeID: "b", timeout: 1500 });
		await new Promise(r => setTimeout(r, 50));
		// What the NATS transporter reports around a reconnect; both requests were lost meanwhile.
		a.broadcastLocal("$transporter.disconnected", { graceFul: false });
		a.broadcastLocal("$transporter.connected", { wasReconnect: true });
		lossy = false;
		assert.equal(await retrySafe, "b", "re-sent and answered");
		await assert.rejects(unsafe, { type: "REQUEST_TIMEOUT" });
		assert.equal(metricValue(await registry.metrics(), "lattice_failover_lost_requests_total"), 1);
		assert.equal((a as unknown as Internals).registry.nodes.get("b")?.available, true, "b answered its pings all along");
	});
});

describe("failover in the config", () => {
	test("is in the middleware list; LATTICE_PROBE_AFTER / LATTICE_PROBE_TIMEOUT are checked", () => {
		assert.ok((buildConfig({}).middlewares as { name?: string }[]).some(m => m.name === "Failover"));
		assert.throws(() => buildConfig({ LATTICE_PROBE_AFTER: "soon" }), { type: ErrorType.CONFIG_INVALID });
		assert.throws(() => buildConfig({ LATTICE_PROBE_TIMEOUT: "0" }), { type: ErrorType.CONFIG_INVALID });
	});
});
