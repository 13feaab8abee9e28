import { test } from "node:test";
import assert from "node:assert/strict";
import { buildConfig } from "../../../moleculer.config.ts";

const base = { NODE_ENV: "development", LATTICE_OPS_PORT: "0" };

test("channel settings are checked at startup", () => {
	assert.throws(() => buildConfig({ ...base, LATTICE_CHANNELS_URL: "redis://localhost" }), /LATTICE_CHANNELS_URL must be a nats:\/\/ or tls:\/\/ URL or 'memory'/);
	assert.throws(() => buildConfig({ ...base, LATTICE_CHANNELS_ACK_WAIT: "0" }), /LATTICE_CHANNELS_ACK_WAIT must be an integer/);
	assert.throws(() => buildConfig({ ...base, LATTICE_CHANNELS_REPLICAS: "7" }), /LATTICE_CHANNELS_REPLICAS/);
	assert.throws(() => buildConfig({ ...base, LATTICE_CHANNELS_DUPLICATE_WINDOW: "x" }), /LATTICE_CHANNELS_DUPLICATE_WINDOW/);
});

test("the Channels middleware is in every node's middleware list", () => {
	for (const env of [base, { ...base, LATTICE_CHANNELS_URL: "memory" }, { ...base, LATTICE_CHANNELS_URL: "nats://127.0.0.1:4222" }]) {
		const names = (buildConfig(env).middlewares as { name?: string }[]).map(m => m.name);
		assert.ok(names.includes("Channels"), JSON.stringify(env));
	}
});
