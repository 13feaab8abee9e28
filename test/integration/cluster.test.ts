import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type { ServiceBroker } from "moleculer";
import {
	createBroker,
	metricValue,
	NATS_URL,
	REDIS_URL,
	startNode,
	uniqueNamespace,
	type LatticeNode
} from "../support/cluster.ts";
import { waitFor } from "../support/processes.ts";
import type { ReceivedEvent } from "../support/fixtures/echo.service.ts";

/**
 * Lattice nodes as separate processes over the shared NATS and Redis: discovery, balanced calls, balanced and
 * broadcast events, departures (graceful and kill -9) and the ops endpoints on every node.
 */

const ECHO = "test/support/fixtures/echo.service.ts";
// Short heartbeats so a killed node is dropped in seconds instead of the preset 15 s.
const HEARTBEAT = { interval: 1, timeout: 4 };
// Moleculer checks for expired heartbeats every `timeout` seconds, so a drop can take up to twice that.
const DROP_WITHIN_MS = (2 * HEARTBEAT.timeout + HEARTBEAT.interval + 3) * 1000;

const namespace = uniqueNamespace("cluster");
const env = {
	TRANSPORTER: NATS_URL,
	CACHER: REDIS_URL,
	NAMESPACE: namespace,
	MOL_HEARTBEAT_INTERVAL: String(HEARTBEAT.interval),
	MOL_HEARTBEAT_TIMEOUT: String(HEARTBEAT.timeout)
};

interface NodeInfo {
	id: string;
	available: boolean;
}

interface ServiceInfo {
	name: string;
	nodes: string[];
}

function echoNode(nodeID: string): Promise<LatticeNode> {
	return startNode({ nodeID, services: ECHO, env });
}

describe("cluster of Lattice nodes over NATS", () => {
	const nodes: LatticeNode[] = [];
	let a: LatticeNode;
	let b: LatticeNode;
	/** A third node in this process: the client that calls, emits and inspects the others. */
	let observer: ServiceBroker;

	/** Which node answered each of `n` calls of `echo.whoami` made by the observer. */
	async function whoami(n: number): Promise<Map<string, number>> {
		const counts = new Map<string, number>();
		for (let i = 0; i < n; i++) {
			const id = await observer.call<string, Record<string, never>>("echo.whoami", {});
			counts.set(id, (counts.get(id) ?? 0) + 1);
		}
		return counts;
	}

	/** Node ids the observer (or, with `via`, that node) currently lists as available. */
	async function availableNodes(via?: string): Promise<string[]> {
		const list = await observer.call<NodeInfo[], Record<string, never>>("$node.list", {}, via ? { nodeID: via } : {});
		return list.filter(n => n.available).map(n => n.id);
	}

	async function echoProviders(via: string): Promise<string[]> {
		const services = await observer.call<ServiceInfo[], object>(
			"$node.services",
			{ onlyAvailable: true, skipInternal: true },
			{ nodeID: via }
		);
		return services.find(s => s.name === "echo")?.nodes ?? [];
	}

	before(async () => {
		const suffix = namespace.slice(-6);
		observer = await createBroker({ ...env, NODEID: `observer-${suffix}`, LOGLEVEL: "error" }, [], {
			heartbeatInterval: HEARTBEAT.interval,
			heartbeatTimeout: HEARTBEAT.timeout
		});
		[a, b] = await Promise.all([echoNode(`echo-a-${suffix}`), echoNode(`echo-b-${suffix}`)]);
		nodes.push(a, b);
	});

	after(async () => {
		await Promise.allSettled(nodes.map(n => n.stop()));
		await observer?.stop();
	});

	test("nodes discover each other's services within seconds", async () => {
		// Each replica's own registry lists both replicas of `echo`: A has learnt of B and B of A.
		for (const [self, peer] of [
			[a, b],
			[b, a]
		] as const) {
			await waitFor(
				async () => (await echoProviders(self.nodeID)).includes(peer.nodeID),
				5_000,
				`${self.nodeID} to list ${peer.nodeID}'s echo service`
			);
		}
		await waitFor(async () => (await whoami(4)).size === 2, 5_000, "observer to reach both replicas");
	});

	test("calls are balanced across two replicas, and each node's metrics count what it served", async () => {
		const before = await Promise.all([a, b].map(async n => metricValue(await n.metrics(), "moleculer_request_total", { action: "echo.whoami", outcome: "success" })));
		const calls = 200;
		const counts = await whoami(calls);
		assert.deepEqual([...counts.keys()].sort(), [a.nodeID, b.nodeID].sort());
		for (const [node, n] of counts) {
			assert.ok(n >= calls * 0.4 && n <= calls * 0.6, `${node} served ${n} of ${calls} calls`);
		}
		for (const [i, node] of [a, b].entries()) {
			const served = metricValue(await node.metrics(), "moleculer_request_total", { action: "echo.whoami", outcome: "success" });
			assert.equal(served - before[i]!, counts.get(node.nodeID), `${node.nodeID}'s moleculer_request_total`);
		}
	});

	test("an emitted event reaches exactly one replica of the group; a broadcast reaches every replica", async () => {
		const emitted = 40;
		const broadcast = 10;
		for (let seq = 1; seq <= emitted; seq++) await observer.emit("fixture.balanced", { seq });
		for (let seq = 1; seq <= broadcast; seq++) await observer.broadcast("fixture.broadcast", { seq });

		const received = async (node: LatticeNode) =>
			observer.call<ReceivedEvent[], Record<string, never>>("echo.received", {}, { nodeID: node.nodeID });
		const all = async () => (await Promise.all([a, b].map(received))).flat();
		await waitFor(
			async () => {
				const events = await all();
				return (
					events.filter(e => e.event === "fixture.balanced").length >= emitted &&
					events.filter(e => e.event === "fixture.broadcast").length >= broadcast * 2
				);
			},
			5_000,
			"every event to arrive"
		);
		// Give duplicates, if any, the time to show up.
		await new Promise(r => setTimeout(r, 300));

		const events = await all();
		const balanced = events.filter(e => e.event === "fixture.balanced");
		assert.deepEqual(
			balanced.map(e => e.seq).sort((x, y) => x - y),
			Array.from({ length: emitted }, (_, i) => i + 1),
			"each emitted event handled exactly once in the group"
		);
		for (const node of [a, b]) {
			const share = balanced.filter(e => e.nodeID === node.nodeID).length;
			assert.ok(share >= emitted * 0.3, `${node.nodeID} got ${share} of ${emitted} balanced events`);
			assert.deepEqual(
				events
					.filter(e => e.event === "fixture.broadcast" && e.nodeID === node.nodeID)
					.map(e => e.seq)
					.sort((x, y) => x - y),
				Array.from({ length: broadcast }, (_, i) => i + 1),
				`${node.nodeID} got every broadcast exactly once`
			);
		}
	});

	test("/ready and /metrics answer on every node", async () => {
		for (const node of [a, b]) {
			const ready = await fetch(`${node.opsUrl}/ready`);
			assert.equal(ready.status, 200, node.nodeID);
			assert.equal(((await ready.json()) as { nodeID: string }).nodeID, node.nodeID);
			const res = await fetch(`${node.opsUrl}/metrics`);
			assert.equal(res.status, 200);
			assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
			const text = await res.text();
			assert.ok(metricValue(text, "nodejs_heap_size_total_bytes") > 0, "prom-client default metrics");
			assert.ok(metricValue(text, "moleculer_request_total", { action: "echo.whoami" }) > 0, "request counter");
			assert.equal(metricValue(text, "lattice_node_info", { node_id: node.nodeID, namespace }), 1);
		}
	});

	test("a replica stopped gracefully loses no call and leaves the registry at once", async () => {
		const c = await echoNode(`echo-c-${namespace.slice(-6)}`);
		nodes.push(c);
		await waitFor(async () => (await whoami(6)).has(c.nodeID), 5_000, "observer to reach the third replica");

		// Callers keep calling while the replica shuts down: tracking drains what it accepted, and the empty INFO
		// it sends first stops new calls from being routed to it.
		let running = true;
		const served = new Map<string, number>();
		const failures: unknown[] = [];
		const callers = Array.from({ length: 8 }, async () => {
			while (running) {
				try {
					const id = await observer.call<string, Record<string, never>>("echo.whoami", {});
					served.set(id, (served.get(id) ?? 0) + 1);
				} catch (err) {
					failures.push(err);
				}
			}
		});
		await waitFor(() => (served.get(c.nodeID) ?? 0) > 20, 5_000, "traffic on the third replica");
		const exit = await c.stop();
		assert.equal(exit, 0, `graceful exit code; output:\n${c.output.join("")}`);
		// Dropped on the DISCONNECT it sent, well before a heartbeat timeout could have done it.
		await waitFor(async () => !(await availableNodes()).includes(c.nodeID), 1_000, "observer to drop the stopped node");
		const afterStop = new Map(served);
		await new Promise(r => setTimeout(r, 300));
		running = false;
		await Promise.all(callers);

		assert.deepEqual(failures, []);
		assert.equal(served.get(c.nodeID), afterStop.get(c.nodeID), "calls routed to the stopped node");
		for (const node of [a, b]) {
			assert.ok((served.get(node.nodeID) ?? 0) > (afterStop.get(node.nodeID) ?? 0), `${node.nodeID} served after the stop`);
			assert.ok(!(await availableNodes(node.nodeID)).includes(c.nodeID), `${node.nodeID} still lists ${c.nodeID}`);
		}
		const counts = await whoami(20);
		assert.deepEqual([...counts.keys()].sort(), [a.nodeID, b.nodeID].sort());
	});

	test("a replica killed with SIGKILL is dropped after the heartbeat timeout and calls go to the others", async () => {
		const d = await echoNode(`echo-d-${namespace.slice(-6)}`);
		nodes.push(d);
		await waitFor(async () => (await whoami(6)).has(d.nodeID), 5_000, "observer to reach the fourth replica");

		await d.kill();
		// No DISCONNECT was sent: only missing heartbeats reveal the departure, on the observer and on the replicas.
		for (const via of [undefined, a.nodeID, b.nodeID]) {
			await waitFor(
				async () => !(await availableNodes(via)).includes(d.nodeID),
				DROP_WITHIN_MS,
				`${via ?? "observer"} to drop ${d.nodeID}`
			);
		}
		const counts = await whoami(40);
		assert.deepEqual([...counts.keys()].sort(), [a.nodeID, b.nodeID].sort());
		assert.equal([...counts.values()].reduce((x, y) => x + y, 0), 40);
	});
});
