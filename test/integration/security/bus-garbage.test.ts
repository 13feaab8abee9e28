import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { connect, type NatsConnection } from "nats";
import { createBroker, metricValue, NATS_URL, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import type { VaultStats } from "./fixtures/vault.service.ts";

/**
 * Garbage on the bus: thousands of random, plaintext, truncated, tampered, moved, oversized and replayed messages
 * on every subject of a running cluster's namespace. Every node keeps serving, nothing reaches a handler, and the
 * drop counters account for every message a node was sent.
 */

const VAULT = "test/integration/security/fixtures/vault.service.ts";
const namespace = uniqueNamespace("garbage");
const prefix = `MOL-${namespace}`;
const env = { TRANSPORTER: NATS_URL, NAMESPACE: namespace };
const NODES = ["garbage-a", "garbage-b", "garbage-caller"] as const;
const TARGETED = ["REQ", "RES", "EVENT", "INFO", "DISCOVER", "PING", "PONG"];
const BROADCAST = ["INFO", "DISCOVER", "HEARTBEAT", "DISCONNECT", "PING"];
// NATS refuses messages over its max_payload (1 MiB by default); these are as large as it lets through.
const OVERSIZED = 1_000_000;

interface Message {
	subject: string;
	data: Buffer;
}

const pick = <T,>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;

function subjects(): string[] {
	return [
		...NODES.flatMap(n => TARGETED.map(t => `${prefix}.${t}.${n}`)),
		...BROADCAST.map(t => `${prefix}.${t}`),
		// Not subscribed unless in broker-enforced mode: published to, answered by nobody.
		`${prefix}.REQB.vault.bump`,
		`${prefix}.EVENTB.vault.vault.tamper`
	];
}

/** The garbage, by kind, built from genuine packets captured earlier. */
function garbage(genuine: Message[]): Record<string, Message[]> {
	const all = subjects();
	const moleculer = (payload: object) => Buffer.from(JSON.stringify({ ver: "5", sender: pick(["garbage-a", "garbage-b"]), ...payload }));
	const targeted = genuine.filter(m => /\.(REQ|RES|EVENT)\.garbage-/.test(m.subject));
	const replayable = targeted.filter(m => m.subject.endsWith(".garbage-a") || m.subject.endsWith(".garbage-b"));
	assert.ok(replayable.length >= 20, `only ${replayable.length} genuine packets to the vault nodes captured`);
	const repeat = <T,>(n: number, f: (i: number) => T) => Array.from({ length: n }, (_, i) => f(i));
	return {
		random: repeat(600, () => ({ subject: pick(all), data: crypto.randomBytes(Math.floor(Math.random() * 2000)) })),
		plaintext: repeat(400, i => ({
			subject: pick(all),
			data: pick([
				moleculer({ id: `g${i}`, action: "vault.bump", params: {}, meta: {}, timeout: 0, level: 1 }),
				moleculer({ id: `g${i}`, event: "vault.tamper", data: {}, groups: ["vault"], broadcast: false, meta: {}, level: 1 }),
				moleculer({}),
				moleculer({ services: [], config: {}, instanceID: "x", ipList: [], hostname: "x", client: {}, seq: 99 }),
				Buffer.from("{not json")
			])
		})),
		truncated: repeat(400, () => {
			const m = pick(genuine);
			return { subject: m.subject, data: m.data.subarray(0, Math.floor(Math.random() * m.data.length)) };
		}),
		tampered: repeat(300, () => {
			const m = pick(targeted);
			const data = Buffer.from(m.data);
			data[Math.floor(Math.random() * data.length)]! ^= 1 << Math.floor(Math.random() * 8);
			return { subject: m.subject, data };
		}),
		// Genuine packets on another node's subject or another packet type's subject.
		moved: repeat(200, () => {
			const m = pick(targeted);
			let subject: string;
			do subject = `${prefix}.${pick(TARGETED)}.${pick(NODES)}`;
			while (subject === m.subject);
			return { subject, data: m.data };
		}),
		replayed: repeat(400, () => pick(replayable)),
		oversized: repeat(30, i => ({
			subject: `${prefix}.REQ.${pick(["garbage-a", "garbage-b"])}`,
			// Half with a genuine header, so the receiver has to run the cipher over the whole megabyte.
			data: i % 2 ? Buffer.concat([pick(targeted).data.subarray(0, 21), crypto.randomBytes(OVERSIZED - 21)]) : crypto.randomBytes(OVERSIZED)
		}))
	};
}

/** How many of `messages` a node subscribes to: its own targeted subjects and every broadcast one. */
function addressedTo(node: string, messages: Message[]): number {
	const own = new Set([...TARGETED.map(t => `${prefix}.${t}.${node}`), ...BROADCAST.map(t => `${prefix}.${t}`)]);
	return messages.filter(m => own.has(m.subject)).length;
}

describe("garbage on the cluster's NATS subjects", () => {
	let a: LatticeNode;
	let b: LatticeNode;
	let caller: ServiceBroker;
	let nc: NatsConnection;

	const callerMetrics = () => (caller.options as unknown as { metricsRegistry: { metrics(): Promise<string> } }).metricsRegistry.metrics();
	const rejected = (text: string, reason?: string) => metricValue(text, "lattice_packets_rejected_total", reason ? { reason } : {});

	before(async () => {
		nc = await connect({ servers: NATS_URL });
		[a, b] = await Promise.all([
			startNode({ nodeID: "garbage-a", services: VAULT, env }),
			startNode({ nodeID: "garbage-b", services: VAULT, env })
		]);
		caller = await createBroker({ ...env, NODEID: "garbage-caller", LOGLEVEL: "error" });
		await caller.waitForServices("vault", 10_000);
		await waitForBoth();
	});

	async function waitForBoth(): Promise<void> {
		for (let i = 0; i < 200; i++) {
			if ((caller.registry.getActionEndpoints("vault.bump")?.count() ?? 0) >= 2) return;
			await new Promise(r => setTimeout(r, 50));
		}
		throw new Error("caller does not see both vault nodes");
	}

	after(async () => {
		await nc?.close();
		await caller?.stop();
		await Promise.all([a?.stop(), b?.stop()]);
	});

	test(">= 1,000 bad messages: every node keeps serving, no handler runs twice, every drop is counted", async () => {
		// Genuine traffic to take packets from.
		const genuine: Message[] = [];
		const sub = nc.subscribe(`${prefix}.>`, { callback: (_e, m) => void genuine.push({ subject: m.subject, data: Buffer.from(m.data) }) });
		let bumped = 0;
		for (let i = 0; i < 40; i++) {
			await caller.call("vault.bump", {});
			bumped++;
		}
		for (let i = 0; i < 10; i++) await caller.emit("vault.tamper", {});
		await nc.flush();
		sub.unsubscribe();

		const kinds = garbage(genuine);
		const messages = Object.values(kinds).flat();
		assert.ok(messages.length >= 1000);
		const before = { a: await a.metrics(), b: await b.metrics(), caller: await callerMetrics() };

		// Calls keep going while the garbage flows.
		let flooding = true;
		let failed = 0;
		const load = Array.from({ length: 4 }, async () => {
			while (flooding) {
				try {
					await caller.call("vault.bump", {});
					bumped++;
				} catch {
					failed++;
				}
			}
		});
		for (let i = 0; i < messages.length; i++) {
			nc.publish(messages[i]!.subject, messages[i]!.data);
			if (i % 50 === 49) await nc.flush();
		}
		await nc.flush();
		// Let the nodes drain what NATS already delivered.
		await new Promise(r => setTimeout(r, 1_000));
		flooding = false;
		await Promise.all(load);

		assert.equal(failed, 0, "calls failed during the flood");
		assert.ok(await a.ready(), "garbage-a not ready");
		assert.ok(await b.ready(), "garbage-b not ready");
		assert.equal(caller.registry.getActionEndpoints("vault.bump")?.count(), 2, "a forged DISCONNECT or INFO changed the registry");
		const stats = await Promise.all(
			["garbage-a", "garbage-b"].map(nodeID => caller.call<VaultStats, object>("vault.stats", {}, { nodeID }))
		);
		assert.equal(
			stats.reduce((s, x) => s + x.bumps, 0),
			bumped,
			"a handler ran for a call nobody made (replayed or forged request)"
		);
		assert.equal(stats.reduce((s, x) => s + x.tampered, 0), 10, "an event handler ran for an event nobody emitted");

		const after = { a: await a.metrics(), b: await b.metrics(), caller: await callerMetrics() };
		for (const [name, nodeID] of [["a", "garbage-a"], ["b", "garbage-b"], ["caller", "garbage-caller"]] as const) {
			const delta = (reason?: string) => rejected(after[name], reason) - rejected(before[name], reason);
			assert.equal(delta(), addressedTo(nodeID, messages), `${nodeID}: drops counted vs messages it was sent`);
			for (const reason of ["unprotected", "malformed", "forged"]) assert.ok(delta(reason) > 0, `${nodeID}: no ${reason} drop`);
		}
		const replayedToVaults = kinds.replayed!.length;
		const replayDrops =
			rejected(after.a, "replayed") - rejected(before.a, "replayed") + rejected(after.b, "replayed") - rejected(before.b, "replayed");
		assert.equal(replayDrops, replayedToVaults, "every replayed packet was recognised as a replay");
	});
});
