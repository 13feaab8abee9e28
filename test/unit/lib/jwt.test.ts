import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createSecretKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { exportJWK } from "jose";
import type { Errors } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { createTokenIssuer, createTokenVerifier } from "../../../lib/jwt.ts";
import { defaultJwtSettings, jwtKeys, type JwtSettings } from "../../../lib/jwt-keys.ts";
import { READER, signToken } from "../../support/auth.ts";

const SECRET = "0123456789abcdef0123456789abcdef-test";
const hs = (over: Partial<JwtSettings> = {}): JwtSettings => ({ ...defaultJwtSettings, secret: SECRET, ...over });
const secretKey = createSecretKey(Buffer.from(SECRET));

function pemPair(type: "rsa" | "ed25519" | "ec", bits = 2048) {
	const opts = type === "rsa" ? { modulusLength: bits } : type === "ec" ? { namedCurve: "prime256v1" } : {};
	const { privateKey, publicKey } = generateKeyPairSync(type as "rsa", opts as { modulusLength: number });
	return {
		privateKey,
		publicKey,
		privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
		publicPem: publicKey.export({ type: "spki", format: "pem" }).toString()
	};
}

function verifier(settings: JwtSettings) {
	return createTokenVerifier(jwtKeys(settings, true), settings);
}

async function rejected(p: Promise<unknown>, reason: string) {
	await assert.rejects(p, (e: Errors.MoleculerError) => {
		assert.equal(e.code, 401);
		assert.equal(e.type, ErrorType.TOKEN_INVALID);
		assert.equal((e.data as { reason: string }).reason, reason);
		return true;
	});
}

function b64(o: unknown) {
	return Buffer.from(JSON.stringify(o)).toString("base64url");
}

test("HS256: issued tokens verify back to the same principal, with a bounded lifetime", async () => {
	const s = hs({ ttl: 120 });
	const keys = jwtKeys(s, true);
	const issued = await createTokenIssuer(keys, s)!({ id: "u7", username: "ann", roles: ["staff"], permissions: ["a:b"] });
	assert.equal(issued.expiresIn, 120);
	assert.ok(Math.abs(issued.expiresAt - (Date.now() / 1000 + 120)) < 5);
	assert.deepEqual(await verifier(s)(issued.token), { id: "u7", username: "ann", roles: ["staff"], permissions: ["a:b"] });
});

test("RS256, EdDSA and ES256 key pairs: the algorithm follows the key; a public key alone verifies but cannot issue", async () => {
	for (const [type, alg] of [["rsa", "RS256"], ["ed25519", "EdDSA"], ["ec", "ES256"]] as const) {
		const pair = pemPair(type);
		const signer = { ...defaultJwtSettings, privateKey: pair.privatePem };
		const keys = jwtKeys(signer, true);
		assert.deepEqual(keys.algorithms, [alg]);
		const { token } = await createTokenIssuer(keys, signer)!(READER);
		assert.equal(JSON.parse(Buffer.from(token.split(".")[0]!, "base64url").toString()).alg, alg);
		const gateway = { ...defaultJwtSettings, publicKey: pair.publicPem.replace(/\n/g, "\\n") };
		assert.equal(createTokenIssuer(jwtKeys(gateway, true), gateway), null);
		assert.equal((await verifier(gateway)(token)).id, READER.id, `${alg} verified with the public key (escaped newlines accepted)`);
	}
});

test("alg none, algorithm confusion and foreign keys never pass", async () => {
	const none = `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "x", exp: Math.floor(Date.now() / 1000) + 60, iss: "lattice", aud: "lattice-api", permissions: ["*"] })}.`;
	await rejected(verifier(hs())(none), "algorithm");

	const pair = pemPair("rsa");
	const rs = { ...defaultJwtSettings, publicKey: pair.publicPem };
	// The classic confusion: HS256 keyed with the RSA public key's PEM bytes, against an RS256 verifier.
	const confused = await signToken(READER, { alg: "HS256", key: createSecretKey(Buffer.from(pair.publicPem)) });
	await rejected(verifier(rs)(confused), "algorithm");
	await rejected(verifier(rs)(none), "algorithm");
	await rejected(verifier(hs())(await signToken(READER, { alg: "RS256", key: pair.privateKey })), "algorithm");
	await rejected(verifier(hs())(await signToken(READER, { key: createSecretKey(Buffer.from("another-secret-another-secret-000")) })), "signature");
});

test("expiry, not-before, issuer, audience and subject are checked, with the configured clock tolerance", async () => {
	const v = verifier(hs({ clockTolerance: 30 }));
	await rejected(v(await signToken(READER, { key: secretKey, expiresIn: -60 })), "expired");
	assert.equal((await v(await signToken(READER, { key: secretKey, expiresIn: -10 }))).id, READER.id, "10 s late is within 30 s of skew");
	await rejected(verifier(hs({ clockTolerance: 0 }))(await signToken(READER, { key: secretKey, expiresIn: -10 })), "expired");
	await rejected(v(await signToken(READER, { key: secretKey }, { nbf: Math.floor(Date.now() / 1000) + 300 })), "claims");
	await rejected(v(await signToken(READER, { key: secretKey, issuer: "evil" })), "claims");
	await rejected(v(await signToken(READER, { key: secretKey, audience: "other-api" })), "claims");
	await rejected(v(await signToken({ ...READER, id: "" }, { key: secretKey })), "claims");
});

test("tampered claims break the signature; garbage and oversized tokens are refused", async () => {
	const token = await signToken(READER, { key: secretKey });
	const [h, , sig] = token.split(".");
	const payload = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString());
	const forged = `${h}.${b64({ ...payload, permissions: ["*"] })}.${sig}`;
	const v = verifier(hs());
	await rejected(v(forged), "signature");
	await rejected(v("not-a-jwt"), "signature");
	await rejected(v("a".repeat(9000)), "malformed");
});

test("weak, ambiguous or broken key settings refuse to start; no key refuses in production only", () => {
	const invalid = (s: Partial<JwtSettings>, production = true) =>
		assert.throws(() => jwtKeys({ ...defaultJwtSettings, ...s }, production), (e: Errors.MoleculerError) => e.type === ErrorType.CONFIG_INVALID, JSON.stringify(s).slice(0, 80));
	invalid({ secret: "short" });
	invalid({ secret: SECRET, jwksUrl: "https://idp.example.com/jwks" });
	invalid({ privateKey: "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----" });
	invalid({ privateKey: pemPair("rsa", 1024).privatePem });
	invalid({ privateKey: pemPair("rsa").privatePem, publicKey: pemPair("rsa").publicPem });
	invalid({ jwksUrl: "https://idp.example.com/jwks", algorithms: ["HS256"] });
	invalid({ jwksUrl: "http://idp.example.com/jwks" });
	invalid({});
	const dev = { ...defaultJwtSettings };
	const a = jwtKeys(dev, false);
	assert.equal(a.ephemeral, true);
	assert.equal(jwtKeys(dev, false).verifyKey, a.verifyKey, "issuer and gateway of one process share the generated secret");
});

test("JWKS: tokens from the identity provider verify by kid; unknown keys are 401; an unreachable JWKS is 503", async () => {
	const idp = pemPair("rsa");
	const other = pemPair("rsa");
	const jwk = { ...(await exportJWK(idp.publicKey)), kid: "k1", alg: "RS256", use: "sig" };
	const server: Server = createServer((_req, res) => {
		res.setHeader("content-type", "application/json");
		res.end(JSON.stringify({ keys: [jwk] }));
	});
	await new Promise<void>(r => server.listen(0, "127.0.0.1", r));
	const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
	try {
		const v = verifier({ ...defaultJwtSettings, jwksUrl: url, issuer: "https://idp", audience: "lattice-api" });
		const claims = { scope: "products:write orders:read", preferred_username: "kc-user" };
		const good = await signToken({ ...READER, username: undefined }, { alg: "RS256", key: idp.privateKey as KeyObject, issuer: "https://idp", header: { kid: "k1" } }, claims);
		const p = await v(good);
		assert.equal(p.username, "kc-user");
		assert.deepEqual(p.permissions, ["products:write", "orders:read"], "OAuth scopes count as permissions");
		await rejected(v(await signToken(READER, { alg: "RS256", key: other.privateKey, issuer: "https://idp", header: { kid: "k1" } })), "signature");
		await rejected(v(await signToken(READER, { alg: "HS256", key: secretKey, issuer: "https://idp", header: { kid: "k1" } })), "algorithm");
	} finally {
		await new Promise(r => server.close(r));
	}
	const down = verifier({ ...defaultJwtSettings, jwksUrl: url });
	const token = await signToken(READER, { alg: "RS256", key: idp.privateKey, header: { kid: "k1" } });
	await assert.rejects(down(token), (e: Errors.MoleculerError) => e.code === 503 && e.type === ErrorType.AUTH_UNAVAILABLE);
});
