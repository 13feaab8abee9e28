import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import { connect, type NatsError } from "nats";
import { renderNatsAuthorization, type BusPolicy } from "../../../lib/nats-permissions.ts";
import type { Registry } from "prom-client";
import { ErrorType } from "../../../lib/errors.ts";
import { createBroker, metricValue, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { startNatsServer, waitFor, type NatsServer } from "../../support/processes.ts";
import type { VaultStats } from "./fixtures/vault.service.ts";

/**
 * Broker-enforced mode against a private nats-server configured with the users `npm run nats:permissions` generates:
 * NATS itself refuses a unit publishing to an action it may not call, while declared calls and events work.
 */

const VAULT = "test/integration/security/fixtures/vault.service.ts";
const namespace = uniqueNamespace("enforced");
const PASSWORDS = { vault: "pw-vault-1", caller: "pw-caller-1", reporter: "pw-reporter-1" };

const policy: BusPolicy = {
	namespace,
	members: {
		vault: { password: PASSWORDS.vault, serves: ["vault.*"], eventGroups: ["vault"] },
		caller: { password: PASSWORDS.caller, calls: ["vault.*"], emits: ["vault.tamper"] },
		// May read the vault's statistics, nothing else.
		reporter: { password: PASSWORDS.reporter, calls: ["vault.stats"] }
	}
};

describe("broker-enforced mode: NATS permissions per unit", () => {
	let dir: string;
	let nats: NatsServer;
	let vault: LatticeNode;
	let caller: ServiceBroker;
	let reporter: ServiceBroker;

	const member = (user: keyof typeof PASSWORDS) => ({
		TRANSPORTER: nats.url,
		NAMESPACE: namespace,
		LATTICE_BROKER_ENFORCED: "true",
		LATTICE_NATS_USER: user,
		LATTICE_NATS_PASSWORD: PASSWORDS[user],
		LOGLEVEL: "error"
	});
	const natsLog = () => nats.process.output.join("");

	before(async () => {
		dir = mkdtempSync(path.join(os.tmpdir(), "lattice-enforced-"));
		const conf = path.join(dir, "auth.conf");
		writeFileSync(conf, renderNatsAuthorization(policy, "the test policy"));
		nats = await startNatsServer({ config: conf });
		vault = await startNode({ nodeID: "vault-1", services: VAULT, env: member("vault") });
		caller = await createBroker({ ...member("caller"), NODEID: "caller-1" });
		reporter = await createBroker({ ...member("reporter"), NODEID: "reporter-1" });
		await Promise.all([caller.waitForServices("vault", 10_000), reporter.waitForServices("vault", 10_000)]);
	});

	after(async () => {
		await reporter?.stop();
		await caller?.stop();
		await vault?.stop();
		await nats?.destroy();
		if (dir) rmSync(dir, { recursive: true, force: true });
	});

	test("declared calls and events go through, on per-action subjects", async () => {
		assert.match(await caller.call<string, { who: string }>("vault.reveal", { who: "caller" }), /^VAULT-SECRET/);
		assert.equal(await caller.call("vault.bump", {}), 1);
		await caller.emit("vault.tamper", {});
		await waitFor(async () => (await reporter.call<VaultStats, object>("vault.stats", {})).tampered === 1, 5_000, "event handled");
		assert.deepEqual(await reporter.call<VaultStats, object>("vault.stats", {}), { nodeID: "vault-1", bumps: 1, tampered: 1 });
	});

	test("NATS refuses a unit publishing to an action it may not call; the call fails and the vault never sees it", async () => {
		const before = await reporter.call<VaultStats, object>("vault.stats", {});
		// The node learns of the refusal from NATS and fails the call at once, long before its timeout.
		const forbidden = { name: "MoleculerClientError", code: 403, type: ErrorType.BUS_FORBIDDEN };
		await assert.rejects(reporter.call("vault.bump", {}, { timeout: 5000 }), forbidden);
		// Moleculer's nodeID option would address the node directly, around the per-action subject: refused too.
		await assert.rejects(reporter.call("vault.bump", {}, { timeout: 5000, nodeID: "vault-1" }), forbidden);
		await reporter.emit("vault.tamper", {});
		const violations = [/REQB\.vault\.bump"/, /REQ\.vault-1"/, /EVENTB\.vault\.vault\.tamper"/];
		await waitFor(
			() => violations.every(subject => natsLog().split("\n").some(l => /Publish Violation - User "reporter"/.test(l) && subject.test(l))),
			5_000,
			"the server's permission violations"
		);
		assert.deepEqual(await reporter.call<VaultStats, object>("vault.stats", {}), before);
		const metrics = await (reporter.options as unknown as { metricsRegistry: Registry }).metricsRegistry.metrics();
		assert.ok(metricValue(metrics, "lattice_nats_permission_violations_total", { operation: "publish" }) >= 3);
	});

	test("a unit cannot listen on another unit's action subject, and bad credentials do not connect", async () => {
		const spy = await connect({ servers: nats.url, user: "reporter", pass: PASSWORDS.reporter });
		try {
			const refused = new Promise<NatsError | null>(resolve => {
				spy.subscribe(`MOL-${namespace}.REQB.vault.bump`, { queue: "vault.bump", callback: err => resolve(err) });
			});
			const err = await Promise.race([refused, new Promise<null>(r => setTimeout(() => r(null), 5_000))]);
			assert.ok(err?.isPermissionError(), `expected a permissions violation, got ${String(err)}`);
		} finally {
			await spy.close();
		}
		await assert.rejects(connect({ servers: nats.url, user: "vault", pass: "wrong", maxReconnectAttempts: 0 }), (e: NatsError) =>
			/AUTHORIZATION_VIOLATION/.test(e.code)
		);
		await assert.rejects(connect({ servers: nats.url, maxReconnectAttempts: 0 }), (e: NatsError) => /AUTHORIZATION_VIOLATION/.test(e.code));
	});

	test("a node whose subscriptions NATS refuses keeps running and says why", async () => {
		// The caller unit may not serve the vault: started with the vault service, its action subscriptions are refused.
		const rogue = await startNode({ nodeID: "rogue-vault", services: VAULT, env: { ...member("caller"), LOGLEVEL: "warn" } });
		try {
			await waitFor(() => /NATS subscription on '[^']*REQB\.vault\.[^']*' ended/.test(rogue.output.join("")), 10_000, "the refusal logged");
			await new Promise(r => setTimeout(r, 500));
			assert.ok(rogue.alive(), `the node died:\n${rogue.output.join("")}`);
			assert.ok(await rogue.ready());
			// The real vault still serves.
			await caller.call("vault.stats");
		} finally {
			await rogue.stop();
		}
	});
});
