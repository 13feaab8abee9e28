import { test } from "node:test";
import assert from "node:assert/strict";
import { LatticeNatsTransporter } from "../../../lib/nats.transporter.ts";

test("the discovery wait is Lattice's option, not the NATS client's: it is kept out of what nats.connect() gets", () => {
	const t = new LatticeNatsTransporter({ url: "nats://127.0.0.1:4222", discoveryWait: { minMs: 5 } }) as unknown as {
		opts: Record<string, unknown>;
		discoveryWait: { minMs: number; quietMs: number; maxMs: number };
	};
	assert.equal(t.opts.discoveryWait, undefined);
	assert.equal(t.opts.url, "nats://127.0.0.1:4222");
	assert.deepEqual(t.discoveryWait, { minMs: 5, quietMs: 50, maxMs: 500 });
});
