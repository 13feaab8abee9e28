import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import { connect, nkeys, type NatsError } from "nats";
import { createBroker, uniqueNamespace } from "../../support/cluster.ts";
import { startNatsServer, type NatsServer } from "../../support/processes.ts";
import VaultService from "./fixtures/vault.service.ts";

/**
 * LATTICE_NATS_* against private nats-servers that require a token, an nkey, or mutual TLS: Lattice nodes connect
 * and call each other with the right settings; a client without them is turned away by the server.
 */

let dir: string;

function file(name: string, text: string): string {
	const p = path.join(dir, name);
	writeFileSync(p, text);
	return p;
}

/** Two Lattice nodes on `url`, one serving the vault, the other calling it. */
async function pair(env: Record<string, string>): Promise<ServiceBroker[]> {
	const base = { NAMESPACE: uniqueNamespace("natsauth"), LOGLEVEL: "error", ...env };
	const server = await createBroker({ ...base, NODEID: "server" }, [VaultService]);
	const client = await createBroker({ ...base, NODEID: "client" });
	await client.waitForServices("vault", 10_000);
	return [server, client];
}

async function refused(opts: Parameters<typeof connect>[0]): Promise<string> {
	try {
		const nc = await connect({ maxReconnectAttempts: 0, reconnect: false, timeout: 3000, ...opts });
		await nc.close();
		return "connected";
	} catch (err) {
		return (err as NatsError).code ?? (err as Error).message;
	}
}

describe("NATS connection security", () => {
	const servers: NatsServer[] = [];
	const brokers: ServiceBroker[] = [];

	before(() => {
		dir = mkdtempSync(path.join(os.tmpdir(), "lattice-natsauth-"));
	});

	after(async () => {
		await Promise.all(brokers.map(b => b.stop()));
		await Promise.all(servers.map(s => s.destroy()));
		rmSync(dir, { recursive: true, force: true });
	});

	test("token: LATTICE_NATS_TOKEN connects; no token or a wrong one is an authorization violation", async () => {
		const nats = await startNatsServer({ config: file("token.conf", 'authorization { token: "t0k-lattice-42" }\n') });
		servers.push(nats);
		const [, client] = await pair({ TRANSPORTER: nats.url, LATTICE_NATS_TOKEN: "t0k-lattice-42" }).then(b => (brokers.push(...b), b));
		assert.match(await client!.call<string, { who: string }>("vault.reveal", { who: "token" }), /^VAULT-SECRET/);
		assert.equal(await refused({ servers: nats.url }), "AUTHORIZATION_VIOLATION");
		assert.equal(await refused({ servers: nats.url, token: "guess" }), "AUTHORIZATION_VIOLATION");
	});

	test("user/password: LATTICE_NATS_USER and _PASSWORD connect, survive Moleculer's URL parsing; a wrong password does not", async () => {
		const nats = await startNatsServer({
			config: file("users.conf", 'authorization { users: [ { user: "lattice", password: "pw-lattice-42" } ] }\n')
		});
		servers.push(nats);
		const [, client] = await pair({ TRANSPORTER: nats.url, LATTICE_NATS_USER: "lattice", LATTICE_NATS_PASSWORD: "pw-lattice-42" }).then(
			b => (brokers.push(...b), b)
		);
		assert.match(await client!.call<string, { who: string }>("vault.reveal", { who: "user" }), /^VAULT-SECRET/);
		assert.equal(await refused({ servers: nats.url, user: "lattice", pass: "wrong" }), "AUTHORIZATION_VIOLATION");
	});

	test("nkey: LATTICE_NATS_NKEY_SEED signs the server's challenge; another seed is refused", async () => {
		const user = nkeys.createUser();
		const nats = await startNatsServer({ config: file("nkey.conf", `authorization { users: [ { nkey: "${user.getPublicKey()}" } ] }\n`) });
		servers.push(nats);
		const seed = new TextDecoder().decode(user.getSeed());
		const [, client] = await pair({ TRANSPORTER: nats.url, LATTICE_NATS_NKEY_SEED: seed }).then(b => (brokers.push(...b), b));
		assert.match(await client!.call<string, { who: string }>("vault.reveal", { who: "nkey" }), /^VAULT-SECRET/);
		const { nkeyAuthenticator } = await import("nats");
		assert.equal(
			await refused({ servers: nats.url, authenticator: nkeyAuthenticator(nkeys.createUser().getSeed()) }),
			"AUTHORIZATION_VIOLATION"
		);
	});

	test("mutual TLS: tls:// with LATTICE_NATS_TLS_CA/_CERT/_KEY connects; plaintext or no client certificate does not", async () => {
		const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
		openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=lattice-test-ca");
		for (const who of ["server", "client"]) {
			openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${who}.key`, "-out", `${who}.csr`, "-subj", `/CN=${who}`);
			file(`${who}.ext`, who === "server" ? "subjectAltName=IP:127.0.0.1,DNS:localhost\n" : "extendedKeyUsage=clientAuth\n");
			openssl("x509", "-req", "-in", `${who}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${who}.crt`, "-days", "1", "-extfile", `${who}.ext`);
		}
		const p = (f: string) => path.join(dir, f);
		const nats = await startNatsServer({
			config: file("tls.conf", `tls { cert_file: "${p("server.crt")}", key_file: "${p("server.key")}", ca_file: "${p("ca.crt")}", verify: true }\n`)
		});
		servers.push(nats);
		const url = `tls://127.0.0.1:${nats.port}`;
		const [, client] = await pair({
			TRANSPORTER: url,
			LATTICE_NATS_TLS_CA: p("ca.crt"),
			LATTICE_NATS_TLS_CERT: p("client.crt"),
			LATTICE_NATS_TLS_KEY: p("client.key")
		}).then(b => (brokers.push(...b), b));
		assert.match(await client!.call<string, { who: string }>("vault.reveal", { who: "tls" }), /^VAULT-SECRET/);
		assert.notEqual(await refused({ servers: nats.url, tls: null }), "connected");
		assert.notEqual(await refused({ servers: nats.url, tls: { caFile: p("ca.crt") } }), "connected");
	});
});
