import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker } from "moleculer";
import { connect, type NatsConnection, type Subscription } from "nats";
import {
	createBroker,
	metricValue,
	NATS_URL,
	startNode,
	uniqueNamespace,
	type LatticeNode
} from "../../support/cluster.ts";
import { sleep, waitFor } from "../../support/processes.ts";
import { VAULT_SECRET, type VaultStats } from "./fixtures/vault.service.ts";

/**
 * Node-to-node trust on the shared NATS: Lattice nodes (one a separate process) next to a plain, unmodified
 * Moleculer 0.15 node without the key on the same namespace, and a raw NATS client reading every subject.
 */

const VAULT = "test/integration/security/fixtures/vault.service.ts";
const namespace = uniqueNamespace("trust");
const prefix = `MOL-${namespace}`;
const env = { TRANSPORTER: NATS_URL, NAMESPACE: namespace };

interface Captured {
	subject: string;
	data: Buffer;
}

/** Everything published on the namespace, as any NATS client could read it. */
function tap(nc: NatsConnection, subject: string): { messages: Captured[]; sub: Subscription } {
	const messages: Captured[] = [];
	const sub = nc.subscribe(subject, { callback: (_err, m) => void messages.push({ subject: m.subject, data: Buffer.from(m.data) }) });
	return { messages, sub };
}

function json(value: unknown): Uint8Array {
	return Buffer.from(JSON.stringify(value));
}

function isJson(b: Buffer): boolean {
	try {
		JSON.parse(b.toString());
		return true;
	} catch {
		return false;
	}
}

describe("a plain Moleculer node without the cluster key", () => {
	let vaultNode: LatticeNode;
	let caller: ServiceBroker;
	let plain: ServiceBroker;
	let nc: NatsConnection;
	let wire: ReturnType<typeof tap>;

	const stats = () => caller.call<VaultStats, Record<string, never>>("vault.stats", {});
	const rejected = async (reason?: string) =>
		metricValue(await vaultNode.metrics(), "lattice_packets_rejected_total", reason ? { reason } : {});

	before(async () => {
		nc = await connect({ servers: NATS_URL });
		wire = tap(nc, `${prefix}.>`);
		// One-second heartbeats, so every side has announced itself a few times within the wait below.
		vaultNode = await startNode({ nodeID: "trust-vault", services: VAULT, env: { ...env, MOL_HEARTBEAT_INTERVAL: "1" } });
		caller = await createBroker({ ...env, NODEID: "trust-caller", LOGLEVEL: "error" }, [], { heartbeatInterval: 1 });
		await caller.waitForServices("vault", 10_000);
		// Stock Moleculer, nothing but the transporter: what anyone with access to NATS can run.
		plain = new ServiceBroker({
			namespace,
			nodeID: "intruder",
			transporter: { type: "NATS", options: { url: NATS_URL } },
			heartbeatInterval: 1,
			logger: false
		});
		await plain.start();
		// Three heartbeat rounds of every side: the plain node had every chance to learn about the others.
		await sleep(3_500);
	});

	after(async () => {
		wire?.sub.unsubscribe();
		await nc?.close();
		await plain?.stop();
		await caller?.stop();
		await vaultNode?.stop();
	});

	test("discovers no Lattice node or service, and cannot call one", async () => {
		assert.deepEqual(
			plain.registry.nodes.list({}).map(n => n.id),
			["intruder"]
		);
		assert.equal(plain.registry.getServiceList({ onlyAvailable: false }).filter(s => s.name === "vault").length, 0);
		await assert.rejects(plain.call("vault.reveal", { who: "intruder" }), { name: "ServiceNotFoundError" });
		// Meanwhile the Lattice nodes see each other and not the intruder.
		assert.equal(caller.registry.nodes.list({}).some(n => n.id === "intruder"), false);
		assert.match(await caller.call<string, { who: string }>("vault.reveal", { who: "caller" }), /^VAULT-SECRET/);
		assert.ok((await rejected("unprotected")) > 0, "the intruder's DISCOVER/INFO/HEARTBEAT were dropped");
	});

	test("its hand-made REQ, EVENT and INFO packets get no answer and change nothing", async () => {
		const before = await stats();
		const droppedBefore = await rejected("unprotected");
		const answers = tap(nc, `${prefix}.RES.intruder`);
		const base = { ver: "5", sender: "intruder" };
		const request = (id: string, action: string, params: object) => ({
			...base,
			id,
			action,
			params,
			meta: { user: { id: "admin", roles: ["admin"], permissions: ["*"] } },
			headers: {},
			timeout: 0,
			level: 1,
			tracing: null,
			parentID: null,
			requestID: id,
			caller: null,
			stream: false
		});
		nc.publish(`${prefix}.REQ.trust-vault`, json(request("forged-1", "vault.bump", {})));
		nc.publish(`${prefix}.REQ.trust-vault`, json(request("forged-2", "vault.reveal", { who: "intruder" })));
		nc.publish(`${prefix}.REQB.vault.bump`, json(request("forged-3", "vault.bump", {})));
		nc.publish(
			`${prefix}.EVENT.trust-vault`,
			json({ ...base, id: "ev-1", event: "vault.tamper", data: {}, groups: ["vault"], broadcast: false, meta: {}, headers: {}, level: 1, needAck: false })
		);
		// A fake node announcing the vault service, hoping to receive the calls meant for it.
		nc.publish(
			`${prefix}.INFO`,
			json({
				...base,
				sender: "impostor",
				services: [{ name: "vault", fullName: "vault", settings: {}, metadata: {}, actions: { "vault.reveal": { name: "vault.reveal" } }, events: {} }],
				config: {},
				instanceID: "impostor-1",
				ipList: ["127.0.0.1"],
				hostname: "impostor",
				client: { type: "nodejs", version: "0.15.2", langVersion: process.version },
				seq: 1,
				metadata: {}
			})
		);
		await nc.flush();
		await waitFor(async () => (await rejected("unprotected")) >= droppedBefore + 4, 5_000, "hand-made packets dropped");
		await sleep(1_000);

		assert.equal(answers.messages.length, 0, "no response was sent to the intruder");
		answers.sub.unsubscribe();
		assert.deepEqual(await stats(), before, "no call or event reached the vault");
		assert.equal(caller.registry.nodes.list({}).some(n => n.id === "impostor"), false);
		for (let i = 0; i < 20; i++) {
			const r = await caller.call<string, { who: string }>("vault.reveal", { who: `c${i}` }, { meta: {} });
			assert.match(r, /^VAULT-SECRET/);
		}
		assert.equal((await stats()).bumps, before.bumps);
	});

	test("nothing it reads on the namespace's subjects is plaintext", async () => {
		for (let i = 0; i < 10; i++) await caller.call("vault.reveal", { who: "PAYLOAD-MARKER-42" });
		await caller.emit("vault.tamper", { note: "EVENT-MARKER-42" });
		await waitFor(async () => (await stats()).tampered > 0, 5_000, "event delivered");
		await nc.flush();

		const lattice = wire.messages.filter(m => {
			// The plain node's own packets (and the ones this test forged) are its plaintext, not ours.
			if (!isJson(m.data)) return true;
			const sender = (JSON.parse(m.data.toString()) as { sender?: string }).sender;
			return sender !== "intruder" && sender !== "impostor";
		});
		const subjects = new Set(lattice.map(m => m.subject.slice(prefix.length + 1).split(".")[0]));
		for (const type of ["REQ", "RES", "EVENT", "INFO", "HEARTBEAT", "DISCOVER"]) assert.ok(subjects.has(type), `captured no ${type} packet`);
		const markers = [VAULT_SECRET, "PAYLOAD-MARKER-42", "EVENT-MARKER-42", "vault", "reveal", "trust-caller", "trust-vault"];
		for (const m of lattice) {
			assert.ok(!isJson(m.data), `${m.subject} carries JSON`);
			for (const marker of markers) {
				assert.ok(!m.data.toString("latin1").includes(marker), `${m.subject} shows '${marker}'`);
			}
		}
		assert.ok(lattice.length > 30, `only ${lattice.length} Lattice packets captured`);
	});
});

describe("cluster key settings across nodes", () => {
	const KEY_A = Buffer.alloc(32, 0x11).toString("base64");
	const KEY_B = Buffer.alloc(32, 0x22).toString("base64");
	const KEY_C = Buffer.alloc(32, 0x33).toString("base64");

	test("rollover: phase-1 and phase-2 nodes talk both ways; a node with another key is cut off", async () => {
		const ns = uniqueNamespace("rollover");
		const base = { TRANSPORTER: NATS_URL, NAMESPACE: ns };
		const vault = (await import("./fixtures/vault.service.ts")).default;
		// Phase 1: still sealing with A, already accepting B. Phase 2: sealing with B, still accepting A.
		const phase1 = await createBroker({ ...base, LOGLEVEL: "error", NODEID: "phase1", LATTICE_CLUSTER_KEY: KEY_A, LATTICE_CLUSTER_KEY_PREVIOUS: KEY_B }, [vault]);
		const phase2 = await createBroker({ ...base, LOGLEVEL: "error", NODEID: "phase2", LATTICE_CLUSTER_KEY: KEY_B, LATTICE_CLUSTER_KEY_PREVIOUS: KEY_A });
		const other = await createBroker({ ...base, LOGLEVEL: "error", NODEID: "other", LATTICE_CLUSTER_KEY: KEY_C });
		try {
			await phase2.waitForServices("vault", 10_000);
			assert.match(await phase2.call<string, { who: string }>("vault.reveal", { who: "p2" }), /^VAULT-SECRET/);
			await sleep(1_000);
			assert.equal(other.registry.getServiceList({ onlyAvailable: false }).some(s => s.name === "vault"), false);
			const metrics = await (phase1.options as { metricsRegistry: { metrics(): Promise<string> } }).metricsRegistry.metrics();
			assert.ok(metricValue(metrics, "lattice_packets_accepted_total", { key: "previous" }) > 0, "phase1 opened phase2's packets with its second key");
			assert.ok(metricValue(metrics, "lattice_packets_rejected_total") > 0, "the other-key node's packets were dropped");
		} finally {
			await Promise.all([phase1.stop(), phase2.stop(), other.stop()]);
		}
	});

	test("NODE_ENV=production without LATTICE_CLUSTER_KEY refuses to start, saying why", async () => {
		const node = await startNode({
			nodeID: "keyless",
			services: VAULT,
			env: { ...env, LATTICE_CLUSTER_KEY: "" },
			waitReady: false
		});
		const code = await Promise.race([node.exited, sleep(20_000).then(() => "still running")]);
		if (code === "still running") await node.kill();
		assert.notEqual(code, 0);
		assert.notEqual(code, "still running");
		assert.match(node.output.join(""), /LATTICE_CLUSTER_KEY is required/);
	});
});
