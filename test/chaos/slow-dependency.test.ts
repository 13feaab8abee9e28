import { test } from "node:test";
import assert from "node:assert/strict";
import type { Context, Errors, ServiceBroker } from "moleculer";
import { presets } from "../../moleculer.config.ts";
import { faultEnv, startNatsServer, startNode, uniqueNamespace, waitFor, type LatticeNode } from "../support/index.ts";
import { CHAOS_SERVICE, nodeAvailable, quietClient } from "./helpers.ts";

interface Stats {
	flakyCalls: number;
	maxRunning: number;
}

interface Answer {
	node?: string;
	fallback?: boolean;
	reason?: string;
}

/**
 * A dependency in its own process that turns slow or failing, called from this process (a Lattice node built from
 * the real config) with the presets as they ship: timeouts fire, the circuit breaker opens, half-opens and closes,
 * the caller's declared fallback answers meanwhile, and the bulkhead's concurrency and queue limits hold.
 */
test("slow and failing dependency: timeouts, circuit breaker, fallbacks and bulkhead limits", async t => {
	const nats = await startNatsServer();
	const env = { TRANSPORTER: nats.url, NAMESPACE: uniqueNamespace("dep"), CACHER: "none" };
	const dep: LatticeNode = await startNode({
		nodeID: "dependency",
		services: CHAOS_SERVICE,
		env: {
			...env,
			// The bulkhead alone is under test here; node-level shedding would refuse first (it has its own suite).
			LATTICE_CONCURRENCY_LIMIT: "0",
			...faultEnv([{ match: "chaos.sluggish", delay: { ms: 3000 } }])
		}
	});
	const client: ServiceBroker = await quietClient(env);
	t.after(async () => {
		await client.stop();
		await dep.stop();
		await nats.destroy();
	});
	client.createService({
		name: "front",
		actions: {
			read: {
				public: true,
				fallback: async (_ctx: Context, err: Errors.MoleculerError): Promise<Answer> => ({ fallback: true, reason: err.type }),
				handler: (ctx: Context): Promise<Answer> => ctx.call("chaos.flaky")
			}
		}
	});
	await waitFor(() => nodeAvailable(client, dep.nodeID), 15_000, "the dependency");
	await client.waitForServices(["chaos", "front"]);
	const stats = () => client.call<Stats>("chaos.stats");
	const breaker: string[] = [];
	for (const state of ["opened", "half-opened", "closed"]) {
		client.localBus.on(`$circuit-breaker.${state}`, (p: { action?: string }) => {
			if (p?.action === "chaos.flaky") breaker.push(state);
		});
	}

	await t.test("a call slower than its timeout fails with REQUEST_TIMEOUT instead of waiting", async () => {
		await assert.rejects(client.call("chaos.sluggish", {}, { timeout: 500 }), { type: "REQUEST_TIMEOUT" });
	});

	await t.test("failures open the breaker; the fallback answers; no call reaches the dependency while it is open", async () => {
		assert.deepEqual(Object.keys(await client.call<Answer>("front.read")), ["node"], "healthy to begin with");
		await client.call("chaos.setMode", { mode: "fail" });
		const answers: Answer[] = [];
		await waitFor(
			async () => {
				answers.push(await client.call<Answer>("front.read"));
				return breaker.includes("opened");
			},
			20_000,
			"the breaker to open",
			10
		);
		// The breaker counts the healthy call above too.
		assert.ok(answers.length + 1 >= presets.circuitBreaker.minRequestCount, `opened after ${answers.length} failed calls`);
		assert.ok(answers.every(a => a.fallback && a.reason === "DEPENDENCY_DOWN"), "every failure was answered by the fallback");

		const reached = (await stats()).flakyCalls;
		const whileOpen = await Promise.all(Array.from({ length: 50 }, () => client.call<Answer>("front.read")));
		assert.ok(whileOpen.every(a => a.fallback), "the fallback answers while the breaker is open");
		assert.equal((await stats()).flakyCalls, reached, "calls fail fast at the caller: none reached the dependency");
	});

	await t.test("after halfOpenTime one call probes the dependency; once it works again the breaker closes", async () => {
		await client.call("chaos.setMode", { mode: "ok" });
		await waitFor(
			async () => {
				await client.call<Answer>("front.read");
				return breaker.includes("closed");
			},
			presets.circuitBreaker.halfOpenTime + 15_000,
			"the breaker to close",
			100
		);
		assert.deepEqual(breaker, ["opened", "half-opened", "closed"]);
		assert.deepEqual(Object.keys(await client.call<Answer>("front.read")), ["node"], "the dependency answers again");
	});

	await t.test("bulkhead: 64 run at once, 512 wait, the rest are refused at once with QUEUE_FULL", async () => {
		const { concurrency, maxQueueSize } = presets.bulkhead;
		const burst = concurrency + maxQueueSize + 200;
		const outcomes = await Promise.all(
			Array.from({ length: burst }, () =>
				client.call("chaos.hold", { ms: 600 }, { timeout: 30_000 }).then(
					() => "ok",
					(err: Errors.MoleculerError) => err.type
				)
			)
		);
		const count = (what: string) => outcomes.filter(o => o === what).length;
		t.diagnostic(JSON.stringify({ scenario: "bulkhead burst", burst, ok: count("ok"), queueFull: count("QUEUE_FULL") }));
		assert.equal((await stats()).maxRunning, concurrency, "never more than the bulkhead's concurrency at once");
		assert.equal(count("ok") + count("QUEUE_FULL"), burst, "every call either ran or was refused as QUEUE_FULL");
		assert.ok(count("QUEUE_FULL") > 0, "the queue filled up");
		assert.ok(count("ok") >= concurrency + maxQueueSize, "the queue held its full size");
	});

	assert.ok(dep.alive());
});
