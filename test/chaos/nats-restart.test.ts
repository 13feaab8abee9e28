import { test } from "node:test";
import assert from "node:assert/strict";
import { restartNats, sleep, startLoad, startNatsServer, startNodes, stopAll, uniqueNamespace, waitFor } from "../support/index.ts";
import { CHAOS_SERVICE, nodeAvailable, quietClient, report } from "./helpers.ts";

/** Recovery budget once NATS is back (issue 5): calls succeed again within this. */
const RECOVERY_MS = 5000;

/**
 * Restart the cluster's nats-server under load: every node reconnects by itself and re-announces, and calls
 * succeed again within 5 s of NATS being back, including those caught in flight by the outage (retry-safe calls
 * are re-sent rather than left to time out). Calls made while NATS is down may fail; no process exits.
 */
test("nats-server restart under load: reconnect, re-discover, calls succeed again within 5 s, no process exits", async t => {
	const nats = await startNatsServer();
	const env = { TRANSPORTER: nats.url, NAMESPACE: uniqueNamespace("natsrestart"), CACHER: "none" };
	const replicas = await startNodes(2, "replica", { services: CHAOS_SERVICE, env });
	const client = await quietClient(env);
	t.after(async () => {
		await client.stop();
		await stopAll(replicas);
		await nats.destroy();
	});
	await waitFor(() => replicas.every(r => nodeAvailable(client, r.nodeID)), 15_000, "both replicas");

	const answeredBy = new Set<string>();
	let restarted = false;
	const load = startLoad({
		concurrency: 32,
		call: async () => {
			const res = await client.call<{ node: string }, { ms: number }>("chaos.work", { ms: 2 });
			if (restarted) answeredBy.add(res.node);
		}
	});
	await load.successes(500, 20_000);
	await sleep(3000);

	const downAt = load.now();
	const { downAt: downWall, upAt: upWall } = await restartNats(nats, 3000);
	const upAt = downAt + (upWall - downWall);
	restarted = true;
	await sleep(12_000);
	const r = await load.stop();

	const successes = r.records.filter(c => c.ok && c.end >= upAt).map(c => c.end);
	const firstSuccess = Math.min(...successes) - upAt;
	// Calls caught by the outage (started before NATS was back) and how long after it they were settled.
	const caught = r.records.filter(c => c.start < upAt && c.end >= downAt);
	const settled = Math.max(0, ...caught.map(c => c.end)) - upAt;
	const failedLater = r.records.filter(c => !c.ok && c.start >= upAt);
	report(t, "nats-server restart (3 s down)", r, {
		firstSuccessAfterUpMs: Math.round(firstSuccess),
		caughtCalls: caught.length,
		caughtFailed: caught.filter(c => !c.ok).length,
		caughtSettledAfterUpMs: Math.round(settled)
	});

	assert.ok(firstSuccess <= RECOVERY_MS, `first success ${Math.round(firstSuccess)} ms after NATS was back`);
	assert.ok(settled <= RECOVERY_MS, `calls caught by the outage were settled ${Math.round(settled)} ms after NATS was back`);
	assert.deepEqual(failedLater, [], "no call started after NATS was back failed");
	assert.ok(successes.filter(e => e >= upAt + RECOVERY_MS).length > 1000, "steady traffic after recovery");
	assert.deepEqual([...answeredBy].sort(), replicas.map(r => r.nodeID).sort(), "both replicas were re-discovered and serve");
	assert.ok(replicas.every(n => n.alive()), "no replica exited");
	assert.ok(replicas.every(n => nodeAvailable(client, n.nodeID)));
});
