import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "nats";
import type { ServiceBroker } from "moleculer";
import { createBroker, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { sleep, waitFor } from "../../support/processes.ts";
import type { Reading } from "../../support/fixtures/readings.service.ts";
import type { TelemetryStats } from "../../support/fixtures/telemetry.service.ts";
import { factNames } from "../../../lib/facts.ts";
import { NATS_CREDENTIALS, startEdgeTopology, type EdgeTopology } from "./topology.ts";

/**
 * The store-and-forward proof on the real hub/leaf topology: both sites cut off from the hub, 10,000 readings
 * emitted at each, the edge node of site A killed (-9) and restarted halfway through, the links restored. The cloud
 * must then have handled exactly 20,000 distinct readings, none twice, each source in order.
 */

const READINGS = "test/support/fixtures/readings.service.ts";
const TELEMETRY = "test/support/fixtures/telemetry.service.ts";
const SITES = ["site-a", "site-b"] as const;
const PER_SITE = 10_000;
const SENSORS = 4;
const BATCH = 100;

const namespace = uniqueNamespace("facts");
const names = factNames(namespace);
const place = (site: string, role: "edge" | "cloud") => ({ NAMESPACE: namespace, LATTICE_REGION: "eu", LATTICE_ZONE: "eu-1", LATTICE_SITE: site, LATTICE_ROLE: role });

/** Site's readings, interleaved over its sensors: reading i is sensor i % SENSORS, seq ⌊i / SENSORS⌋ + 1. */
function readingsOf(site: string): Reading[] {
	return Array.from({ length: PER_SITE }, (_, i) => {
		const source = `${site}/sensor-${i % SENSORS}`;
		const seq = Math.floor(i / SENSORS) + 1;
		return { id: `${source}:${seq}`, source, seq, value: i };
	});
}

describe("store-and-forward across a cut: 2 sites × 10,000 readings, kill -9 at the edge", () => {
	let topo: EdgeTopology;
	const edgeNodes = new Map<string, LatticeNode>();
	let cloudNode: LatticeNode;
	const callers = new Map<string, ServiceBroker>();
	let cloud: ServiceBroker;
	const nats: NatsConnection[] = [];

	function startEdge(site: string): Promise<LatticeNode> {
		return startNode({ nodeID: `${site}-readings`, services: READINGS, env: { ...topo.nodeEnv(site), ...place(site, "edge") } }).then(n => {
			edgeNodes.set(site, n);
			return n;
		});
	}

	async function natsAt(at: string): Promise<NatsConnection> {
		const server = at === "hub" ? topo.hub : topo.sites.get(at)!.nats;
		const nc = await connect({ servers: server.url, user: NATS_CREDENTIALS.LATTICE_NATS_USER, pass: NATS_CREDENTIALS.LATTICE_NATS_PASSWORD });
		nats.push(nc);
		return nc;
	}

	async function streamCount(at: string, stream: string): Promise<number> {
		const nc = await natsAt(at);
		try {
			return (await (await nc.jetstreamManager()).streams.info(stream)).state.messages;
		} finally {
			await nc.close();
		}
	}

	function stats(): Promise<TelemetryStats> {
		return cloud.call<TelemetryStats, Record<string, never>>("telemetry.stats", {});
	}

	before(async () => {
		topo = await startEdgeTopology([...SITES]);
		await waitFor(() => topo.allLinked(), 15_000, "both leaf servers linked to the hub");
		// The sites' outboxes first, so the hub stream finds them when the cloud consumer creates it.
		await Promise.all(SITES.map(startEdge));
		cloudNode = await startNode({
			nodeID: "cloud-telemetry",
			services: TELEMETRY,
			env: { ...topo.nodeEnv("hub"), ...place("dc-1", "cloud"), LATTICE_FACT_SITES: SITES.join(",") }
		});
		for (const site of SITES) {
			callers.set(site, await createBroker({ ...topo.nodeEnv(site), ...place(site, "edge"), NODEID: `${site}-caller` }));
		}
		cloud = await createBroker({ ...topo.nodeEnv("hub"), ...place("dc-1", "cloud"), NODEID: "cloud-caller" });
		await waitFor(async () => (await stats()).handled === 0, 20_000, "the telemetry service");
		for (const [site, caller] of callers) {
			await waitFor(() => caller.registry.getActionEndpoints("readings.record")?.hasAvailable(), 20_000, `${site}'s readings service`);
		}
		// The hub sources both outboxes before the cut (each source's consumer is set up across the link).
		const hub = await natsAt("hub");
		await waitFor(
			async () => {
				const info = await (await hub.jetstreamManager()).streams.info(names.hub);
				return info.sources?.length === SITES.length && info.sources.every(s => !s.error && s.active >= 0);
			},
			20_000,
			"the hub stream sourcing every site"
		);
		await hub.close();
	});

	after(async () => {
		await Promise.all(nats.map(nc => nc.close().catch(() => undefined)));
		for (const b of [...callers.values(), cloud]) await b?.stop();
		await Promise.all([...edgeNodes.values(), cloudNode].map(n => n?.stop()));
		await topo?.destroy();
	});

	test("cut, emit, kill -9 and restart an edge node, restore: exactly once, in order", async t => {
		for (const site of SITES) topo.link.cut(topo.sites.get(site)!.server);

		const progress: Record<string, number> = {};
		const retried: Record<string, number> = {};
		const deduplicated: Record<string, number> = {};
		async function emit(site: string): Promise<void> {
			const caller = callers.get(site)!;
			const all = readingsOf(site);
			retried[site] = 0;
			deduplicated[site] = 0;
			for (let i = 0; i < all.length; i += BATCH) {
				const batch = all.slice(i, i + BATCH);
				const deadline = Date.now() + 60_000;
				// The producer's side of exactly-once: a batch whose call failed is sent again, same ids.
				for (;;) {
					try {
						const r = await caller.call<{ stored: number; duplicates: number }, { readings: Reading[] }>("readings.record", { readings: batch });
						deduplicated[site] += r.duplicates;
						break;
					} catch (err) {
						if (Date.now() > deadline) throw err;
						retried[site]++;
						await sleep(100);
					}
				}
				progress[site] = i + batch.length;
			}
		}

		const t0 = Date.now();
		const emitting = Promise.all(SITES.map(emit));
		// Kill site A's edge node mid-stream, while it is publishing, and start it again.
		await waitFor(() => (progress["site-a"] ?? 0) >= PER_SITE / 2, 60_000, "half of site A's readings", 1);
		await edgeNodes.get("site-a")!.kill();
		const killedAt = progress["site-a"];
		await startEdge("site-a");
		await emitting;
		const emitMs = Date.now() - t0;
		t.diagnostic(
			`emitted ${PER_SITE} readings per site while cut in ${emitMs} ms; site A's node killed after ${killedAt}, ` +
				`${retried["site-a"]} failed batch calls retried, ${deduplicated["site-a"]} readings recognised as already stored`
		);

		// Everything is at the edge, once, and nothing has reached the hub.
		for (const site of SITES) assert.equal(await streamCount(site, names.outbox(site)), PER_SITE, `${site}'s outbox holds each reading once`);
		assert.equal(await streamCount("hub", names.hub), 0, "nothing crossed the cut links");
		assert.equal((await stats()).handled, 0);

		for (const site of SITES) topo.link.restore(topo.sites.get(site)!.server);
		const restoredAt = Date.now();
		await waitFor(async () => (await stats()).handled >= SITES.length * PER_SITE, 120_000, "the cloud to handle every reading", 100);
		const drainMs = Date.now() - restoredAt;
		// Late duplicates, if any, would show up now.
		await sleep(2_000);
		const s = await stats();
		const hubCount = await streamCount("hub", names.hub);
		t.diagnostic(
			`links restored: ${s.handled} readings handled in the cloud ${drainMs} ms later; hub stream ${hubCount} messages; ` +
				`collector acked ${s.collector.duplicates} duplicate deliveries without handling them`
		);

		assert.equal(s.handled, SITES.length * PER_SITE, "handled exactly 20,000 times");
		assert.equal(s.distinct, SITES.length * PER_SITE, "20,000 distinct readings");
		assert.equal(s.duplicatesHandled, 0, "no reading handled twice");
		assert.equal(s.outOfOrder, 0, "every source in order, without gaps");
		assert.equal(s.collector.gaps, 0);
		for (const site of SITES) {
			assert.equal(s.perSite[site], PER_SITE);
			for (let k = 0; k < SENSORS; k++) assert.equal(s.lastSeq[`${site}/sensor-${k}`], PER_SITE / SENSORS);
		}
	});
});
