import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Errors, ServiceBroker } from "moleculer";
import { createBroker, NATS_URL, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";
import type { Answer } from "../../support/fixtures/site-echo.service.ts";
import { ErrorType } from "../../../lib/errors.ts";

/**
 * Locality-aware routing across real Lattice nodes over the shared NATS: two edge sites in one zone and a cloud
 * site in another. The caller sits in site A. Calls stay in A while A has a replica, move to the nearest other
 * tier when A's replicas go (gracefully, then kill -9), and come back when one returns.
 */

const ECHO = "test/support/fixtures/site-echo.service.ts";
const namespace = uniqueNamespace("locality");
const common = { TRANSPORTER: NATS_URL, NAMESPACE: namespace, LATTICE_REGION: "eu" };
const SITE_A = { ...common, LATTICE_ZONE: "eu-1", LATTICE_SITE: "site-a", LATTICE_ROLE: "edge" };
const SITE_B = { ...common, LATTICE_ZONE: "eu-1", LATTICE_SITE: "site-b", LATTICE_ROLE: "edge" };
const CLOUD = { ...common, LATTICE_ZONE: "eu-2", LATTICE_SITE: "dc-1", LATTICE_ROLE: "cloud" };

type Tally = Record<string, number>;

describe("locality-aware routing, 4 nodes in 3 sites", () => {
	const nodes = new Map<string, LatticeNode>();
	let caller: ServiceBroker;

	function start(nodeID: string, env: Record<string, string>): Promise<LatticeNode> {
		return startNode({ nodeID, services: ECHO, env }).then(n => {
			nodes.set(nodeID, n);
			return n;
		});
	}

	async function ask(action = "siteEcho.where"): Promise<string> {
		try {
			return (await caller.call<Answer, Record<string, never>>(action, {})).nodeID;
		} catch (err) {
			return `error:${(err as Errors.MoleculerError).type}`;
		}
	}

	/** Who answered each of `n` sequential calls (errors by type). */
	async function tally(action = "siteEcho.where", n = 20): Promise<Tally> {
		const out: Tally = {};
		for (let i = 0; i < n; i++) {
			const who = await ask(action);
			out[who] = (out[who] ?? 0) + 1;
		}
		return out;
	}

	/** Calls until one is answered by `nodeID`; returns the elapsed ms and the errors met on the way. */
	async function untilAnsweredBy(nodeID: string, timeoutMs: number): Promise<{ ms: number; errors: string[] }> {
		const t0 = Date.now();
		const errors: string[] = [];
		await waitFor(
			async () => {
				const who = await ask();
				if (who.startsWith("error:")) errors.push(who);
				return who === nodeID;
			},
			timeoutMs,
			`calls answered by ${nodeID}`,
			20
		);
		return { ms: Date.now() - t0, errors };
	}

	before(async () => {
		await Promise.all([start("a-1", SITE_A), start("a-2", SITE_A), start("b-1", SITE_B), start("cloud-1", CLOUD)]);
		caller = await createBroker({ ...SITE_A, NODEID: "a-caller" });
		await waitFor(
			() => (caller.registry.getActionEndpoints("siteEcho.where") as unknown as { count(): number } | undefined)?.count() === 4,
			15_000,
			"the caller to see all four replicas"
		);
	});

	after(async () => {
		await caller?.stop();
		await Promise.all([...nodes.values()].map(n => n.stop()));
	});

	test("calls stay in the caller's site, spread over its replicas", async () => {
		assert.deepEqual(await tally(), { "a-1": 10, "a-2": 10 });
	});

	test("an action that requires the cloud runs in the cloud; one bound to the site never leaves it", async () => {
		assert.deepEqual(await tally("siteEcho.whereCloud", 6), { "cloud-1": 6 });
		assert.deepEqual(await tally("siteEcho.whereInSite", 6), { "a-1": 3, "a-2": 3 });
	});

	test("one in-site replica leaves gracefully: the other takes every call, without errors", async () => {
		await nodes.get("a-1")!.stop();
		nodes.delete("a-1");
		assert.deepEqual(await tally(), { "a-2": 20 });
	});

	test("the last in-site replica is killed: calls fail over to the next tier (site B, same zone)", async t => {
		await nodes.get("a-2")!.kill();
		nodes.delete("a-2");
		const { ms, errors } = await untilAnsweredBy("b-1", 15_000);
		t.diagnostic(`kill -9 of the last in-site replica → first call answered in site B after ${ms} ms (${errors.length} failed calls: ${errors.join(", ") || "none"})`);
		assert.deepEqual(await tally(), { "b-1": 20 }, "the zone tier beats the cloud in another zone");
		// Nothing in the site: an action bound to it fails at once rather than leaving.
		const t0 = Date.now();
		assert.deepEqual(await tally("siteEcho.whereInSite", 3), { [`error:${ErrorType.UNREACHABLE}`]: 3 });
		assert.ok(Date.now() - t0 < 1000, "refused without waiting for anything");
	});

	test("an in-site replica comes back: calls return to the site", async t => {
		const t0 = Date.now();
		await start("a-1", SITE_A);
		const ready = Date.now() - t0;
		const { ms, errors } = await untilAnsweredBy("a-1", 15_000);
		t.diagnostic(`a-1 restarted: ready after ${ready} ms, first call back in site A ${ms} ms after that`);
		assert.deepEqual(errors, []);
		assert.deepEqual(await tally(), { "a-1": 20 });
	});
});
