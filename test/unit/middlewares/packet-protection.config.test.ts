import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Errors } from "moleculer";
import { nkeys } from "nats";
import { buildConfig } from "../../../moleculer.config.ts";
import { ErrorType } from "../../../lib/errors.ts";

/** Cluster security settings: LATTICE_CLUSTER_*, LATTICE_BROKER_ENFORCED and LATTICE_NATS_* → broker options. */

const KEY = Buffer.alloc(32, 3).toString("base64");
const CLUSTER = { TRANSPORTER: "nats://nats:4222" };

type Mw = { name?: string; transporterSend?: unknown };

function protection(env: Record<string, string>): Mw {
	const first = buildConfig(env).middlewares?.[0] as Mw;
	assert.equal(first.name, "PacketProtection", "packet protection must be the first middleware (next to the wire)");
	return first;
}

function configError(pattern: RegExp) {
	return (err: Errors.MoleculerError) => err.type === ErrorType.CONFIG_INVALID && pattern.test(err.message);
}

function nats(env: Record<string, string>): Record<string, unknown> {
	return (buildConfig({ ...CLUSTER, LATTICE_CLUSTER_KEY: KEY, ...env }).transporter as unknown as { options: Record<string, unknown> }).options;
}

test("production refuses a cluster without LATTICE_CLUSTER_KEY, saying how to make one", () => {
	assert.throws(() => buildConfig({ ...CLUSTER, NODE_ENV: "production" }), configError(/LATTICE_CLUSTER_KEY.*openssl rand -base64 32/s));
	// A single process has no packets to protect.
	assert.doesNotThrow(() => buildConfig({ NODE_ENV: "production" }));
});

test("outside production a cluster without a key starts unprotected; with a key every packet is sealed", () => {
	assert.equal(protection({ ...CLUSTER }).transporterSend, undefined);
	assert.equal(typeof protection({ ...CLUSTER, NODE_ENV: "production", LATTICE_CLUSTER_KEY: KEY }).transporterSend, "function");
});

test("bad cluster key settings are config errors", () => {
	const cases: Array<[Record<string, string>, RegExp]> = [
		[{ LATTICE_CLUSTER_KEY: "too-short" }, /LATTICE_CLUSTER_KEY must be base64 or hex/],
		[{ LATTICE_CLUSTER_KEY: KEY, LATTICE_CLUSTER_KEY_PREVIOUS: "abc" }, /LATTICE_CLUSTER_KEY_PREVIOUS must be/],
		[{ LATTICE_CLUSTER_KEY_PREVIOUS: KEY }, /LATTICE_CLUSTER_KEY_PREVIOUS is set but LATTICE_CLUSTER_KEY is not/],
		[{ LATTICE_CLUSTER_KEY: KEY, LATTICE_CLUSTER_CIPHER: "aes-256-cbc" }, /LATTICE_CLUSTER_CIPHER must be one of/],
		[{ LATTICE_CLUSTER_KEY: KEY, LATTICE_CLUSTER_MAX_SKEW: "0" }, /LATTICE_CLUSTER_MAX_SKEW/],
		[{ LATTICE_BROKER_ENFORCED: "yes" }, /LATTICE_BROKER_ENFORCED must be one of true, false/]
	];
	for (const [env, pattern] of cases) assert.throws(() => buildConfig({ ...CLUSTER, ...env }), configError(pattern), JSON.stringify(env));
});

test("LATTICE_BROKER_ENFORCED=true disables Moleculer's balancer so each action has its own NATS subject", () => {
	assert.equal(buildConfig({ ...CLUSTER }).disableBalancer, false);
	assert.equal(buildConfig({ ...CLUSTER, LATTICE_BROKER_ENFORCED: "true" }).disableBalancer, true);
});

test("NATS credentials: user/password, token, nkey seed and creds file; a bad one fails at startup", () => {
	// Through an authenticator: Moleculer's transporter overwrites plain user/pass options with the URL's.
	const auth = (env: Record<string, string>) => (nats(env).authenticator as (nonce?: string) => Record<string, unknown>)("n0nce");
	assert.deepEqual(auth({ LATTICE_NATS_USER: "u", LATTICE_NATS_PASSWORD: "p" }), { user: "u", pass: "p" });
	assert.deepEqual(auth({ LATTICE_NATS_TOKEN: "t0k" }), { auth_token: "t0k" });
	assert.equal(nats({}).authenticator, undefined);
	assert.throws(() => nats({ LATTICE_NATS_USER: "u", LATTICE_NATS_TOKEN: "t" }), configError(/not LATTICE_NATS_USER and LATTICE_NATS_TOKEN/));

	const user = nkeys.createUser();
	assert.equal(auth({ LATTICE_NATS_NKEY_SEED: new TextDecoder().decode(user.getSeed()) }).nkey, user.getPublicKey());
	assert.throws(() => nats({ LATTICE_NATS_NKEY_SEED: "SUNOTASEED" }), configError(/LATTICE_NATS_NKEY_SEED is not usable/));

	const dir = mkdtempSync(path.join(os.tmpdir(), "lattice-creds-"));
	try {
		const creds = path.join(dir, "node.creds");
		writeFileSync(
			creds,
			`-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.e30.sig\n------END NATS USER JWT------\n\n` +
				`-----BEGIN USER NKEY SEED-----\n${new TextDecoder().decode(user.getSeed())}\n------END USER NKEY SEED------\n`
		);
		assert.equal(typeof nats({ LATTICE_NATS_CREDS: creds }).authenticator, "function");
		writeFileSync(creds, "not a creds file");
		assert.throws(() => nats({ LATTICE_NATS_CREDS: creds }), configError(/LATTICE_NATS_CREDS is not usable/));
		assert.throws(() => nats({ LATTICE_NATS_CREDS: path.join(dir, "missing.creds") }), configError(/LATTICE_NATS_CREDS/));
		assert.throws(
			() => nats({ LATTICE_NATS_CREDS: creds, LATTICE_NATS_NKEY_SEED: "x" }),
			configError(/not LATTICE_NATS_NKEY_SEED and LATTICE_NATS_CREDS/)
		);
	} finally {
		rmSync(dir, { recursive: true, force: true });
	}
});

test("NATS TLS: a tls:// URL requires TLS; CA, client certificate and key come from files", () => {
	assert.equal(nats({}).tls, undefined);
	assert.deepEqual(buildTls({ TRANSPORTER: "tls://nats:4222" }), {});
	assert.deepEqual(buildTls({ LATTICE_NATS_TLS_CA: "/etc/nats/ca.crt" }), { caFile: "/etc/nats/ca.crt" });
	assert.deepEqual(buildTls({ LATTICE_NATS_TLS_CA: "/ca", LATTICE_NATS_TLS_CERT: "/crt", LATTICE_NATS_TLS_KEY: "/key" }), {
		caFile: "/ca",
		certFile: "/crt",
		keyFile: "/key"
	});
	assert.throws(() => nats({ LATTICE_NATS_TLS_CERT: "/crt" }), configError(/LATTICE_NATS_TLS_CERT and LATTICE_NATS_TLS_KEY go together/));
});

function buildTls(env: Record<string, string>): unknown {
	return nats(env).tls;
}
