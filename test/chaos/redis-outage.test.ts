import { test } from "node:test";
import assert from "node:assert/strict";
import {
	metricValue,
	sleep,
	startLoad,
	startNatsServer,
	startNodes,
	startRedisServer,
	stopAll,
	uniqueNamespace,
	waitFor,
	type LatticeNode
} from "../support/index.ts";
import { CHAOS_SERVICE, nodeAvailable, quietClient, report } from "./helpers.ts";

/** Sum of one cache-lookup outcome over the replicas' /metrics. */
async function lookups(nodes: LatticeNode[], outcome: string): Promise<number> {
	const texts = await Promise.all(nodes.map(n => n.metrics()));
	return texts.reduce((sum, text) => sum + metricValue(text, "lattice_cache_lookups_total", { outcome }), 0);
}

/**
 * Stop the cluster's Redis under a load of cached reads: reads fall back to the service with zero request errors,
 * and the cache is used again once Redis is back. L1 is cut to one entry so reads really go to Redis.
 */
test("Redis stopped under load: zero request errors, reads served by the service, cache used again when Redis returns", async t => {
	const nats = await startNatsServer();
	const redis = await startRedisServer();
	const namespace = uniqueNamespace("redis");
	const env = { TRANSPORTER: nats.url, NAMESPACE: namespace };
	const replicas = await startNodes(2, "replica", {
		services: CHAOS_SERVICE,
		env: { ...env, CACHER: redis.url, LATTICE_CACHE_MAX: "1" }
	});
	const client = await quietClient({ ...env, CACHER: "none" });
	t.after(async () => {
		await client.stop();
		await stopAll(replicas);
		await stopAll([nats, redis]);
	});
	await waitFor(() => replicas.every(r => nodeAvailable(client, r.nodeID)), 15_000, "both replicas");

	const load = startLoad({
		concurrency: 32,
		call: () => client.call("chaos.cached", { key: `k${Math.floor(Math.random() * 200)}` })
	});
	await waitFor(async () => (await lookups(replicas, "l2")) > 1000, 20_000, "Redis hits before the outage");

	const stoppedAt = load.now();
	await redis.stop();
	const errorsBefore = await lookups(replicas, "l2_error");
	const missesBefore = await lookups(replicas, "miss");
	await sleep(6000);
	const outage = load.window(stoppedAt);
	const l2ErrorsDuring = (await lookups(replicas, "l2_error")) - errorsBefore;
	const missesDuring = (await lookups(replicas, "miss")) - missesBefore;

	await redis.start();
	const backAt = Date.now();
	const hitsAtReturn = await lookups(replicas, "l2");
	await waitFor(async () => (await lookups(replicas, "l2")) - hitsAtReturn > 500, 20_000, "Redis hits after it returns", 250);
	const cacheBackAfter = Date.now() - backAt;
	await sleep(2000);
	const r = await load.stop();

	report(t, "Redis stopped for 6 s", r, {
		callsDuringOutage: outage.calls,
		failedDuringOutage: outage.failed,
		l2ErrorsDuringOutage: l2ErrorsDuring,
		missesServedByHandlerDuringOutage: missesDuring,
		cacheHitsResumedAfterMs: cacheBackAfter
	});

	assert.equal(r.failed, 0, `failed calls: ${JSON.stringify(r.errors)}`);
	assert.ok(outage.calls > 1000, "steady reads while Redis was down");
	assert.ok(missesDuring > 1000, "the handler answered while Redis was down");
	assert.ok(l2ErrorsDuring > 0, "the outage was real: Redis lookups failed meanwhile");
	assert.ok(replicas.every(n => n.alive()));
});
