import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type { ServiceBroker } from "moleculer";
import { createBroker, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { startNatsServer, waitFor, type NatsServer } from "../../support/processes.ts";

/**
 * Readiness follows the transporter: a node cut off from NATS reports 503 so Kubernetes stops routing to it,
 * and 200 again once NATS is back. Runs against a private nats-server, since the test stops it.
 */

interface ReadyBody {
	status: string;
	nodeID: string;
	reasons: string[];
}

async function readiness(node: LatticeNode): Promise<{ status: number; body: ReadyBody }> {
	const res = await fetch(`${node.opsUrl}/ready`);
	return { status: res.status, body: (await res.json()) as ReadyBody };
}

describe("ops server /ready follows the NATS connection", () => {
	let nats: NatsServer;
	let node: LatticeNode;
	let client: ServiceBroker;

	before(async () => {
		nats = await startNatsServer();
		const namespace = uniqueNamespace("ready");
		const env = { TRANSPORTER: nats.url, CACHER: "memory", NAMESPACE: namespace };
		node = await startNode({ nodeID: `ready-${namespace.slice(-6)}`, services: "test/support/fixtures/echo.service.ts", env });
		client = await createBroker({ ...env, NODEID: `ready-client-${namespace.slice(-6)}`, LOGLEVEL: "error" });
	});

	after(async () => {
		// A broker cannot flush its goodbye to a NATS that is gone: bring it back before stopping anything.
		if (nats && !nats.process.alive()) await nats.start();
		await node?.stop();
		await client?.stop();
		await nats?.destroy();
	});

	test("200 while connected, 503 while NATS is down, 200 again once it returns", async () => {
		let r = await readiness(node);
		assert.equal(r.status, 200);
		assert.deepEqual(r.body.reasons, []);
		await waitFor(() => client.call("echo.whoami", {}), 5_000, "client to reach the node");

		await nats.stop(true);
		r = await waitFor(
			async () => {
				const now = await readiness(node);
				return now.status === 503 && now;
			},
			10_000,
			"/ready to report 503 without NATS"
		);
		assert.equal(r.body.status, "not ready");
		assert.deepEqual(r.body.reasons, ["transporter disconnected"]);
		// Liveness is not readiness: the process itself is fine and must not be restarted.
		assert.equal((await fetch(`${node.opsUrl}/live`)).status, 200);

		await nats.start();
		await waitFor(async () => (await readiness(node)).status === 200, 15_000, "/ready to recover after NATS returns");
		// Ready again means reachable again, not only a flag flipped back. The client's own reconnect may come after
		// the node's (each waits out its own backoff): a reply sent before the client has re-subscribed is lost, so
		// each attempt gets a short timeout and the next one goes out.
		assert.equal(
			await waitFor(() => client.call("echo.whoami", {}, { timeout: 2_000 }), 15_000, "client to reach the node again"),
			node.nodeID
		);
	});
});
