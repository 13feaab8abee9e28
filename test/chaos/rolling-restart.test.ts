import { test } from "node:test";
import assert from "node:assert/strict";
import { httpCall, sleep, startLoad, startNatsServer, startNode, stopAll, uniqueNamespace, waitFor, type LatticeNode } from "../support/index.ts";
import { CHAOS_GATEWAY, CHAOS_SERVICE, report } from "./helpers.ts";

interface Departure {
	/** Ms from SIGTERM to the first 503 from /ready (null if none was seen before the process left). */
	notReadyAfterMs: number | null;
	/** Ms from SIGTERM to exit. */
	exitedAfterMs: number;
	exitCode: number | string;
}

/** SIGTERMs a node and watches its /ready until it exits. */
async function terminate(node: LatticeNode): Promise<Departure> {
	const t0 = Date.now();
	let notReadyAfterMs: number | null = null;
	const watch = (async () => {
		while (node.alive() && notReadyAfterMs === null) {
			try {
				if ((await fetch(`${node.opsUrl}/ready`)).status === 503) notReadyAfterMs = Date.now() - t0;
			} catch {
				// The ops server closes at the very end of the shutdown.
			}
			await sleep(10);
		}
	})();
	const exitCode = await node.stop(30_000);
	await watch;
	return { notReadyAfterMs, exitedAfterMs: Date.now() - t0, exitCode };
}

/**
 * Graceful shutdown under load: a gateway node and two replicas, HTTP load through the gateway on an action with no
 * retry policy (so nothing is papered over by retries), and a rolling restart that replaces both replicas one
 * after the other (SIGTERM the old one, start its replacement). No request is lost.
 */
test("rolling restart of both replicas under HTTP load through the gateway loses no request", async t => {
	const nats = await startNatsServer();
	const env = { TRANSPORTER: nats.url, NAMESPACE: uniqueNamespace("rolling"), CACHER: "none" };
	const replica = (n: number) => startNode({ nodeID: `replica-${n}`, services: CHAOS_SERVICE, env });
	const [gateway, ...first] = await Promise.all([
		startNode({ nodeID: "gateway", services: CHAOS_GATEWAY, gateway: true, env: { ...env, LATTICE_RATE_LIMIT: "0" } }),
		replica(1),
		replica(2)
	]);
	const nodes: LatticeNode[] = [gateway!, ...first];
	t.after(async () => {
		await stopAll(nodes);
		await nats.destroy();
	});

	const answeredBy = new Map<string, number>();
	const call = httpCall(`${gateway!.gatewayUrl}/chaos/once?ms=100`);
	const load = startLoad({
		concurrency: 32,
		call: async seq => {
			const res = (await call(seq)) as { node: string };
			answeredBy.set(res.node, (answeredBy.get(res.node) ?? 0) + 1);
		}
	});
	await waitFor(() => answeredBy.has("replica-1") && answeredBy.has("replica-2"), 15_000, "both replicas serving");
	await sleep(2000);

	const departures: Departure[] = [];
	for (const [old, next] of [
		[1, 3],
		[2, 4]
	] as const) {
		const [departure, replacement] = await Promise.all([terminate(nodes.find(n => n.nodeID === `replica-${old}`)!), replica(next)]);
		nodes.push(replacement);
		departures.push(departure);
		await waitFor(() => answeredBy.has(`replica-${next}`), 15_000, `replica-${next} serving`);
		await sleep(2000);
	}
	const r = await load.stop();
	report(t, "rolling restart of 2 replicas (SIGTERM)", r, { departures, answeredBy: Object.fromEntries(answeredBy) });

	assert.equal(r.failed, 0, `failed requests: ${JSON.stringify(r.errors)}`);
	for (const d of departures) {
		assert.equal(d.exitCode, 0, "a clean exit");
		assert.notEqual(d.notReadyAfterMs, null, "/ready said 503 before the process left");
	}
	for (const n of nodes.filter(n => n.nodeID === "replica-1" || n.nodeID === "replica-2")) {
		assert.doesNotMatch(n.output.join(""), /GRACEFUL_STOP_TIMEOUT|Unable to stop/, `${n.nodeID} drained in time`);
	}
});
