import { test } from "node:test";
import assert from "node:assert/strict";
import type { Errors } from "moleculer";
import { buildConfig } from "../../moleculer.config.ts";
import { ErrorType } from "../../lib/errors.ts";
import { DEMO_USERS } from "../../lib/users.ts";

const configInvalid = (name: string) => (e: Errors.MoleculerError) => e.type === ErrorType.CONFIG_INVALID && e.message.includes(name);

test("gateway security defaults: 256 KiB bodies, 600 requests/min per client, 10 logins/min, HSTS a year, no CORS", () => {
	const { gateway } = buildConfig({}).lattice;
	assert.equal(gateway.bodyLimit, 262_144);
	assert.deepEqual(gateway.rateLimit, { limit: 600, loginLimit: 10, windowMs: 60_000, redis: null });
	assert.equal(gateway.hstsMaxAge, 31_536_000);
	assert.deepEqual(gateway.corsOrigins, []);
	assert.deepEqual(gateway.trustedProxies, []);
});

test("LATTICE_* gateway settings are read and checked", () => {
	const { gateway } = buildConfig({
		LATTICE_BODY_LIMIT: "1024",
		LATTICE_RATE_LIMIT: "0",
		LATTICE_LOGIN_RATE_LIMIT: "3",
		LATTICE_RATE_LIMIT_WINDOW: "10",
		LATTICE_CORS_ORIGINS: "https://a.example.com, https://*.example.org",
		LATTICE_TRUSTED_PROXIES: "10.0.0.0/8,::1",
		LATTICE_HSTS_MAX_AGE: "0"
	}).lattice;
	assert.equal(gateway.bodyLimit, 1024);
	assert.deepEqual(gateway.rateLimit, { limit: 0, loginLimit: 3, windowMs: 10_000, redis: null });
	assert.deepEqual(gateway.corsOrigins, ["https://a.example.com", "https://*.example.org"]);
	assert.deepEqual(gateway.trustedProxies, ["10.0.0.0/8", "::1"]);
	assert.equal(gateway.hstsMaxAge, 0);
	for (const [name, value] of [
		["LATTICE_CORS_ORIGINS", "a.example.com"],
		["LATTICE_TRUSTED_PROXIES", "10.0.0.0/40"],
		["LATTICE_RATE_LIMIT_REDIS", "memcached://x"],
		["LATTICE_RATE_LIMIT", "-1"],
		["LATTICE_BODY_LIMIT", "0"]
	] as const) {
		assert.throws(() => buildConfig({ [name]: value }), configInvalid(name));
	}
});

test("the rate-limit store: LATTICE_RATE_LIMIT_REDIS, else the CACHER's Redis, else memory", () => {
	assert.equal(buildConfig({ CACHER: "redis://cache:6379" }).lattice.gateway.rateLimit.redis, "redis://cache:6379");
	assert.equal(buildConfig({ CACHER: "redis://cache:6379", LATTICE_RATE_LIMIT_REDIS: "redis://rl:6379" }).lattice.gateway.rateLimit.redis, "redis://rl:6379");
	assert.equal(buildConfig({ CACHER: "redis://cache:6379", LATTICE_RATE_LIMIT_REDIS: "memory" }).lattice.gateway.rateLimit.redis, null);
	assert.equal(buildConfig({ CACHER: "memory" }).lattice.gateway.rateLimit.redis, null);
});

test("JWT settings: defaults, and a bad key source is refused at startup", () => {
	const { jwt } = buildConfig({}).lattice.auth;
	assert.deepEqual({ ...jwt }, { secret: null, privateKey: null, publicKey: null, jwksUrl: null, algorithms: ["RS256"], issuer: "lattice", audience: "lattice-api", ttl: 900, clockTolerance: 30 });
	const set = buildConfig({ LATTICE_JWT_SECRET: "x".repeat(40), LATTICE_JWT_ISSUER: "https://lattice.example", LATTICE_JWT_AUDIENCE: "shop", LATTICE_JWT_TTL: "300", LATTICE_JWT_CLOCK_TOLERANCE: "5" }).lattice.auth.jwt;
	assert.equal(set.issuer, "https://lattice.example");
	assert.equal(set.audience, "shop");
	assert.equal(set.ttl, 300);
	assert.equal(set.clockTolerance, 5);
	assert.throws(() => buildConfig({ LATTICE_JWT_SECRET: "short" }), configInvalid("LATTICE_JWT_SECRET"));
	assert.throws(() => buildConfig({ LATTICE_JWT_SECRET: "x".repeat(40), LATTICE_JWT_JWKS_URL: "https://idp/jwks" }), configInvalid("only one"));
	assert.throws(() => buildConfig({ LATTICE_JWT_TTL: "5" }), configInvalid("LATTICE_JWT_TTL"));
	// A missing key is not a config error: only the gateway and auth services need one (they refuse to start).
	assert.equal(buildConfig({ NODE_ENV: "production" }).lattice.auth.jwt.secret, null);
});

test("users: demo accounts outside production only; LATTICE_USERS replaces them", () => {
	assert.deepEqual(buildConfig({}).lattice.auth.users, [...DEMO_USERS]);
	assert.deepEqual(buildConfig({ NODE_ENV: "production" }).lattice.auth.users, []);
	const users = buildConfig({ LATTICE_USERS: '[{"username":"ann","password":"pw","roles":["staff"]}]' }).lattice.auth.users;
	assert.deepEqual(users, [{ username: "ann", password: "pw", roles: ["staff"], permissions: [] }]);
	assert.throws(() => buildConfig({ NODE_ENV: "production", LATTICE_USERS: '[{"username":"ann","password":"pw"}]' }), configInvalid("plaintext"));
});

test("the authorization middleware wraps outside the cacher and validator", () => {
	const names = (buildConfig({}).middlewares ?? []).map(m => (typeof m === "string" ? m : (m as { name?: string }).name));
	const at = (n: string) => names.indexOf(n);
	assert.ok(at("LatticeAuthorization") > at("Cacher") && at("LatticeAuthorization") > at("Validator"), names.join(", "));
});
