import { afterEach, beforeEach, describe, mock, test } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { ServiceBroker } from "moleculer";
import { SiteProbe } from "../../../lib/site.probe.ts";
import type { Topology } from "../../../lib/settings.ts";

interface FakeNode {
	id: string;
	local: boolean;
	available: boolean;
	metadata: Topology;
	services: { actions: Record<string, unknown> }[];
}

const INTERVAL = 1000;
const site = (s: string, role: Topology["role"] = "edge"): Topology => ({ region: "eu", zone: "eu-1", site: s, role });

/** The slice of a broker the probe uses: registry nodes, transit pings and the local bus carrying pongs. */
function fakeBroker() {
	const nodes = new Map<string, FakeNode>();
	const add = (id: string, where: Topology, actions: string[] = [], local = false) =>
		nodes.set(id, { id, local, available: true, metadata: where, services: [{ actions: Object.fromEntries(actions.map(a => [a, {}])) }] });
	const pings: string[] = [];
	const discovered: string[] = [];
	const bus = new EventEmitter();
	const transit = { connected: true, sendPing: async (id: string) => void pings.push(id) };
	const broker = {
		nodeID: "me",
		metadata: site("plant-a"),
		localBus: bus,
		getLogger: () => ({ info() {}, warn() {} }),
		transit,
		registry: {
			nodes: {
				toArray: () => [...nodes.values()],
				get: (id: string) => nodes.get(id),
				disconnected: (id: string) => {
					nodes.get(id)!.available = false;
				}
			},
			discoverer: { discoverNode: (id: string) => void discovered.push(id) }
		}
	};
	add("me", site("plant-a"), [], true);
	add("neighbour", site("plant-a"));
	add("cloud-1", site("dc", "cloud"), ["telemetry.ingest"]);
	add("other-site", site("plant-b"));
	const pong = (id: string) => bus.emit("$node.pong", { nodeID: id });
	return { broker: broker as unknown as ServiceBroker, nodes, pings, discovered, transit, pong };
}

describe("SiteProbe", () => {
	let f: ReturnType<typeof fakeBroker>;
	let probe: SiteProbe;

	beforeEach(() => {
		mock.timers.enable({ apis: ["setInterval", "Date"] });
		f = fakeBroker();
		probe = new SiteProbe(f.broker, { interval: INTERVAL, misses: 2 });
		probe.start();
	});

	afterEach(() => {
		probe.stop();
		mock.timers.reset();
	});

	test("pings only nodes outside this node's site", () => {
		mock.timers.tick(INTERVAL);
		assert.deepEqual(f.pings.sort(), ["cloud-1", "other-site"]);
	});

	test("a node that answers stays; one that leaves two pings unanswered is dropped at the next tick", () => {
		for (let i = 0; i < 5; i++) {
			mock.timers.tick(INTERVAL);
			f.pong("other-site");
		}
		assert.equal(f.nodes.get("other-site")!.available, true);
		assert.equal(f.nodes.get("cloud-1")!.available, false);
		assert.ok(probe.dropped.has("cloud-1"));
		assert.deepEqual(probe.droppedServing("telemetry.ingest"), ["cloud-1"]);
		assert.deepEqual(probe.droppedServing("other.action"), []);
	});

	test("one late pong resets the count", () => {
		mock.timers.tick(INTERVAL);
		mock.timers.tick(INTERVAL);
		f.pong("cloud-1");
		mock.timers.tick(INTERVAL);
		assert.equal(f.nodes.get("cloud-1")!.available, true);
	});

	test("a dropped node is still pinged and rediscovered as soon as it answers", () => {
		for (let i = 0; i < 3; i++) mock.timers.tick(INTERVAL);
		assert.equal(f.nodes.get("cloud-1")!.available, false);
		f.pings.length = 0;
		mock.timers.tick(INTERVAL);
		assert.ok(f.pings.includes("cloud-1"));
		f.pong("cloud-1");
		assert.deepEqual(f.discovered, ["cloud-1"]);
		assert.equal(probe.dropped.has("cloud-1"), false);
	});

	test("nothing is judged while this node's own NATS connection is down", () => {
		f.transit.connected = false;
		for (let i = 0; i < 5; i++) mock.timers.tick(INTERVAL);
		assert.deepEqual(f.pings, []);
		assert.equal(f.nodes.get("cloud-1")!.available, true);
	});

	test("after this process stalls, outstanding pings are forgiven rather than counted", () => {
		mock.timers.tick(INTERVAL);
		mock.timers.tick(INTERVAL);
		// The event loop was blocked: the next tick comes 5 intervals late, before any pong could be read.
		mock.timers.setTime(Date.now() + 5 * INTERVAL);
		probe.tick();
		assert.equal(f.nodes.get("cloud-1")!.available, true);
	});

	test("interval 0 turns it off", () => {
		probe.stop();
		probe = new SiteProbe(f.broker, { interval: 0, misses: 2 });
		probe.start();
		for (let i = 0; i < 5; i++) mock.timers.tick(INTERVAL);
		assert.deepEqual(f.pings, []);
	});
});
