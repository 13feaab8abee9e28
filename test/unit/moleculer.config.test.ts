import { test } from "node:test";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import type { Errors } from "moleculer";
import config, { buildConfig, expandServices, presets } from "../../moleculer.config.ts";
import { ErrorType } from "../../lib/errors.ts";
import { TwoLevelCacher } from "../../lib/two-level.cacher.ts";
import { LocalityStrategy } from "../../lib/locality.strategy.ts";

test("no environment: one process, in-process cache, presets on, cloud topology", () => {
	const c = buildConfig({});
	assert.equal(c.transporter, null);
	assert.ok(c.cacher instanceof TwoLevelCacher);
	assert.equal(c.requestTimeout, presets.requestTimeout);
	assert.equal((c.tracking as { enabled: boolean }).enabled, true);
	assert.equal((c.circuitBreaker as { enabled: boolean }).enabled, true);
	assert.equal((c.retryPolicy as { enabled: boolean }).enabled, false, "retries are opt-in per action");
	assert.deepEqual(c.metadata, { region: "local", zone: "local", site: "local", role: "cloud" });
	assert.equal(c.lattice.gateway.port, 3000);
	assert.equal(c.lattice.ops.port, 3001);
	assert.equal(c.lattice.production, false);
});

test("TRANSPORTER=nats:// gives NATS that reconnects forever, with credentials kept out of the URL", () => {
	const c = buildConfig({
		TRANSPORTER: "nats://nats:4222",
		NODEID: "n1",
		LATTICE_NATS_USER: "svc",
		LATTICE_NATS_PASSWORD: "pw",
		LATTICE_NATS_TLS_CA: "/etc/ca.pem"
	});
	const t = c.transporter as { type: string; options: Record<string, unknown> };
	assert.equal(t.type, "LatticeNATS");
	assert.equal(t.options.url, "nats://nats:4222");
	assert.equal(t.options.maxReconnectAttempts, -1);
	assert.deepEqual((t.options.authenticator as () => unknown)(), { user: "svc", pass: "pw" });
	assert.deepEqual(t.options.tls, { caFile: "/etc/ca.pem" });
	assert.equal(c.nodeID, "n1");
});

test("LATTICE_DISCOVERY_WAIT sets the least wait for other nodes' INFO (100 ms by default, at most Moleculer's 500)", () => {
	const wait = (env: Record<string, string>) =>
		((buildConfig({ TRANSPORTER: "nats://nats:4222", ...env }).transporter as { options: { discoveryWait?: { minMs: number } } }).options.discoveryWait);
	assert.deepEqual(wait({}), { minMs: 100 });
	assert.deepEqual(wait({ LATTICE_DISCOVERY_WAIT: "500" }), { minMs: 500 });
	assert.deepEqual(wait({ LATTICE_DISCOVERY_WAIT: "0" }), { minMs: 0 });
	for (const bad of ["501", "-1", "soon"]) {
		assert.throws(() => wait({ LATTICE_DISCOVERY_WAIT: bad }), (err: Errors.MoleculerError) => err.type === ErrorType.CONFIG_INVALID, bad);
	}
});

test("CACHER chooses the cache: redis URL, none, or rejects nonsense", () => {
	assert.ok(buildConfig({ CACHER: "redis://127.0.0.1:6379" }).cacher instanceof TwoLevelCacher);
	assert.equal(buildConfig({ CACHER: "none" }).cacher, null);
	assert.throws(() => buildConfig({ CACHER: "memcached://x" }), (err: Errors.MoleculerError) => err.type === ErrorType.CONFIG_INVALID);
});

test("topology and ports come from LATTICE_* and PORT; bad values are refused with a clear error", () => {
	const c = buildConfig({ LATTICE_REGION: "eu", LATTICE_ZONE: "eu-1a", LATTICE_SITE: "plant-7", LATTICE_ROLE: "edge", PORT: "8080", LATTICE_OPS_PORT: "0" });
	assert.deepEqual(c.metadata, { region: "eu", zone: "eu-1a", site: "plant-7", role: "edge" });
	assert.equal(c.lattice.gateway.port, 8080);
	assert.equal(c.lattice.ops.port, 0);
	for (const env of [{ PORT: "http" }, { LATTICE_OPS_PORT: "70000" }, { LATTICE_ROLE: "fog" }, { LATTICE_CACHE_MAX: "-1" }]) {
		assert.throws(() => buildConfig(env), (err: Errors.MoleculerError) => err.type === ErrorType.CONFIG_INVALID && err.message.includes(Object.keys(env)[0]!));
	}
});

test("NODE_ENV=production marks production (JSON logs, no internals in 5xx bodies)", () => {
	assert.equal(buildConfig({ NODE_ENV: "production" }).lattice.production, true);
});

test("SERVICES shorthand names map to .ts service files the runner can load", () => {
	assert.equal(expandServices("api, products", undefined), "services/api.service.ts,services/products.service.ts");
	assert.equal(expandServices("api,!products", "services"), "api.service.ts,!products.service.ts");
	assert.equal(expandServices("test/support/fixtures/echo.service.ts,api", undefined), "test/support/fixtures/echo.service.ts,services/api.service.ts");
	assert.equal(expandServices(undefined, undefined), undefined);
});

test("the runner entry claims TRANSPORTER and CACHER so moleculer-runner cannot overwrite the built objects", () => {
	const saved = { ...process.env };
	try {
		process.env.TRANSPORTER = "nats://127.0.0.1:4222";
		process.env.CACHER = "redis://127.0.0.1:6379";
		process.env.SERVICES = "api";
		delete process.env.SERVICEDIR;
		const c = config();
		assert.equal((c.transporter as { type: string }).type, "LatticeNATS");
		assert.equal(process.env.TRANSPORTER, undefined);
		assert.equal(process.env.CACHER, undefined);
		assert.equal(process.env.SERVICES, "services/api.service.ts");
	} finally {
		for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
		Object.assign(process.env, saved);
	}
});

test("locality-aware balancing by default, without Moleculer's local shortcut; LATTICE_STRATEGY picks another", () => {
	const pick = (env: Record<string, string>) => {
		const r = buildConfig(env).registry as { strategy: unknown; preferLocal: boolean };
		return { strategy: r.strategy, preferLocal: r.preferLocal };
	};
	assert.deepEqual(pick({}), { strategy: LocalityStrategy, preferLocal: false });
	assert.deepEqual(pick({ LATTICE_STRATEGY: "RoundRobin" }), { strategy: "RoundRobin", preferLocal: true });
	for (const env of [{ LATTICE_STRATEGY: "Nearest" }, { LATTICE_SITE_PROBE_INTERVAL: "soon" }, { LATTICE_OUTBOX_MAX_MB: "0" }]) {
		assert.throws(() => buildConfig(env), (err: Errors.MoleculerError) => err.type === ErrorType.CONFIG_INVALID && err.message.includes(Object.keys(env)[0]!));
	}
});

test("store-and-forward settings: hub domain, collected sites, outbox limits", () => {
	assert.deepEqual(buildConfig({}).lattice.facts, { hubDomain: "hub", sites: [], outboxMaxAge: 168 * 3_600_000, outboxMaxBytes: 256 * 1_048_576 });
	const f = buildConfig({ LATTICE_HUB_DOMAIN: "cloud", LATTICE_FACT_SITES: "plant-1, plant-2", LATTICE_OUTBOX_MAX_AGE: "48", LATTICE_OUTBOX_MAX_MB: "64" }).lattice.facts;
	assert.deepEqual(f, { hubDomain: "cloud", sites: ["plant-1", "plant-2"], outboxMaxAge: 48 * 3_600_000, outboxMaxBytes: 64 * 1_048_576 });
});

test("every variable the config reads is in a README configuration table", () => {
	const source = readFileSync(new URL("../../moleculer.config.ts", import.meta.url), "utf8");
	const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
	const tableRows = readme.split("\n").filter(l => l.startsWith("| `"));
	const names = new Set(
		[...source.matchAll(/"((?:LATTICE|OTEL)_[A-Z0-9_]+|DATABASE_URL)"|env\.([A-Z][A-Z0-9_]+)/g)].map(m => m[1] ?? m[2]!)
	);
	assert.ok(names.size > 30, `found only ${names.size} variables: the pattern is stale`);
	const missing = [...names].filter(n => !tableRows.some(row => row.includes(`\`${n}\``)));
	assert.deepEqual(missing, [], "read by moleculer.config.ts but in no README table row");
});
