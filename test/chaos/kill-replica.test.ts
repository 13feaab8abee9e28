import { test } from "node:test";
import assert from "node:assert/strict";
import type { ServiceBroker } from "moleculer";
import { presets } from "../../moleculer.config.ts";
import { sleep, startLoad, startNatsServer, startNodes, stopAll, uniqueNamespace, waitFor } from "../support/index.ts";
import { CHAOS_SERVICE, nodeAvailable, quietClient, report } from "./helpers.ts";

/**
 * kill -9 one of two replicas under steady load of retry-safe calls, with the presets as they ship (no heartbeat
 * tuning): the client loses no call, and it stops routing to the dead node long before the heartbeat timeout.
 */
test("kill -9 of one of two replicas under load: zero failed calls, failover well inside the heartbeat window", async t => {
	const nats = await startNatsServer();
	const env = { TRANSPORTER: nats.url, NAMESPACE: uniqueNamespace("kill"), CACHER: "none" };
	const replicas = await startNodes(2, "replica", { services: CHAOS_SERVICE, env });
	const client: ServiceBroker = await quietClient(env);
	t.after(async () => {
		// The client first, while NATS is still there to say goodbye through; NATS last.
		await client.stop();
		await stopAll(replicas);
		await nats.destroy();
	});
	const [victim, survivor] = replicas as [(typeof replicas)[0], (typeof replicas)[0]];
	await waitFor(() => nodeAvailable(client, victim.nodeID) && nodeAvailable(client, survivor.nodeID), 15_000, "both replicas");

	const answeredBy = new Map<string, number>();
	let afterKill = false;
	const load = startLoad({
		concurrency: 32,
		call: async () => {
			const res = await client.call<{ node: string }, { ms: number }>("chaos.work", { ms: 2 });
			if (afterKill) answeredBy.set(res.node, (answeredBy.get(res.node) ?? 0) + 1);
		}
	});
	await load.successes(500, 20_000);
	await sleep(4000);

	const killedAt = load.now();
	const killed = Date.now();
	await victim.kill();
	await waitFor(() => !nodeAvailable(client, victim.nodeID), presets.heartbeatTimeout * 2000, "the client to drop the killed node");
	const droppedAfter = Date.now() - killed;
	afterKill = true;
	await sleep(Math.max(0, 16_000 - droppedAfter));
	const r = await load.stop();

	const aroundKill = r.records.filter(c => c.start >= killedAt - 100 && c.start <= killedAt + droppedAfter);
	const failover = Math.max(...aroundKill.map(c => c.end - c.start));
	report(t, "kill -9 one of two replicas", r, { droppedAfterMs: droppedAfter, longestCallAroundKillMs: Math.round(failover) });

	assert.ok(r.durationMs >= 20_000, "at least 20 s of load");
	assert.equal(r.failed, 0, `failed calls: ${JSON.stringify(r.errors)}`);
	assert.ok(droppedAfter < presets.heartbeatTimeout * 1000, `dropped after ${droppedAfter} ms, inside the ${presets.heartbeatTimeout} s heartbeat timeout`);
	assert.ok(failover < presets.heartbeatTimeout * 1000, "no call waited for the heartbeat timeout");
	assert.deepEqual([...answeredBy.keys()], [survivor.nodeID], "after the drop only the survivor answers");
	assert.ok(survivor.alive());
});
