import { test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker } from "moleculer";
import { buildConfig } from "../../../moleculer.config.ts";
import { REDACTED, redactSecrets } from "../../../lib/redact.ts";

test("redactSecrets: secret-named values and URL passwords go, everything else stays", () => {
	const out = redactSecrets({
		jwt: { secret: "s3cr3t", issuer: "lattice", ttl: 900 },
		users: [{ username: "ada", passwordHash: "scrypt$abc", password: "pw", roles: ["admin"] }],
		nats: { user: "svc", pass: "natspw", token: "tok", nkeySeed: "SUAX", credentials: "/secrets/x.creds" },
		urls: ["redis://:redispw@10.0.0.1:6379/0", "postgres://app:dbpw@db/lattice", "nats://10.0.0.2:4222", "https://idp.example.com/jwks"],
		privateKey: "-----BEGIN PRIVATE KEY-----",
		publicKey: "-----BEGIN PUBLIC KEY-----",
		empty: { secret: "" },
		absent: { secret: null }
	});
	assert.deepEqual(out, {
		jwt: { secret: REDACTED, issuer: "lattice", ttl: 900 },
		users: [{ username: "ada", passwordHash: REDACTED, password: REDACTED, roles: ["admin"] }],
		nats: { user: "svc", pass: REDACTED, token: REDACTED, nkeySeed: REDACTED, credentials: REDACTED },
		urls: [`redis://:${REDACTED}@10.0.0.1:6379/0`, `postgres://app:${REDACTED}@db/lattice`, "nats://10.0.0.2:4222", "https://idp.example.com/jwks"],
		privateKey: REDACTED,
		publicKey: "-----BEGIN PUBLIC KEY-----",
		empty: { secret: "" },
		absent: { secret: null }
	});
});

test("$node.options, which any cluster member may call, carries none of the node's credentials", async () => {
	const secrets = {
		LATTICE_JWT_SECRET: "jwt-secret-that-is-long-enough-0123456789",
		LATTICE_CLUSTER_KEY: "c".repeat(64),
		LATTICE_NATS_USER: "svc",
		LATTICE_NATS_PASSWORD: "nats-password-42",
		CACHER: "redis://:redis-password-42@127.0.0.1:6379",
		LATTICE_RATE_LIMIT_REDIS: "redis://:ratelimit-password-42@127.0.0.1:6379",
		DATABASE_URL: "postgres://lattice:db-password-42@127.0.0.1:5432/test",
		LATTICE_USERS: JSON.stringify([{ username: "ops", password: "user-password-42", permissions: ["*"] }])
	};
	const config = buildConfig({ ...secrets, TRANSPORTER: "nats://svc:url-password-42@127.0.0.1:4222", LATTICE_OPS_PORT: "0", LOGLEVEL: "warn" });
	// One process: the options still hold the NATS settings built from the environment, but nothing connects.
	const broker = new ServiceBroker({ ...config, transporter: null, logger: false });
	await broker.start();
	const options = await broker.call("$node.options").finally(() => broker.stop());
	const json = JSON.stringify(options);
	for (const p of ["nats-password-42", "redis-password-42", "ratelimit-password-42", "db-password-42", "url-password-42", "user-password-42", secrets.LATTICE_JWT_SECRET])
		assert.ok(!json.includes(p), `$node.options leaks ${p}`);
	// Still useful: the rest of the options are there.
	assert.equal((options as { namespace?: string }).namespace, config.namespace);
	assert.ok(json.includes(REDACTED));
});
