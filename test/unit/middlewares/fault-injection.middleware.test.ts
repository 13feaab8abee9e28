import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker, type ActionSchema, type Context, type Errors, type ServiceSchema } from "moleculer";
import { Registry } from "prom-client";
import { ErrorType } from "../../../lib/errors.ts";
import { FaultInjectionMiddleware, parseFaultRules, type FaultInjectionOptions, type FaultRule } from "../../../middlewares/fault-injection.middleware.ts";
import { buildConfig } from "../../../moleculer.config.ts";
import { createBroker, metricValue } from "../../support/cluster.ts";

/** Deterministic "randomness": 0, 1/n, 2/n … cycling, so a percentage hits exactly that share of n calls. */
function evenly(n: number): () => number {
	let i = 0;
	return () => (i++ % n) / n;
}

const events: string[] = [];

const Target: ServiceSchema = {
	name: "target",
	actions: {
		ok: { public: true, handler: () => "ok" },
		other: { public: true, handler: () => "other" },
		viaGreeter: { public: true, handler: (ctx: Context) => ctx.call("target.ok") }
	},
	events: {
		"thing.happened": { handler: () => void events.push("thing.happened") }
	}
};

async function broker(rules: FaultRule[], extra: Partial<FaultInjectionOptions> = {}) {
	const registry = new Registry();
	const b = new ServiceBroker({ logger: false, skipProcessEventRegistration: true, middlewares: [FaultInjectionMiddleware({ rules, registry, ...extra })] });
	b.createService(Target);
	b.createService({
		name: "greeter",
		actions: { hello: { public: true, handler: (ctx: Context) => ctx.call("target.ok") } }
	});
	await b.start();
	return { b, registry };
}

describe("fault injection middleware", () => {
	test("without rules no handler is wrapped", () => {
		const mw = FaultInjectionMiddleware();
		const handler = () => Promise.resolve(1);
		assert.equal(mw.localAction(handler, { name: "a.b" } as ActionSchema), handler);
		const ruled = FaultInjectionMiddleware({ rules: [{ match: "x.*", abort: {} }] });
		assert.equal(ruled.localAction(handler, { name: "a.b" } as ActionSchema), handler, "a rule for other names leaves it alone");
		assert.notEqual(ruled.localAction(handler, { name: "x.y" } as ActionSchema), handler);
	});

	test("abort hits matching actions only, with the configured code and type, and is counted", async () => {
		const { b, registry } = await broker([{ match: "target.o*", abort: { code: 503, type: "UPSTREAM_DOWN" } }]);
		try {
			await assert.rejects(b.call("target.ok"), (err: Errors.MoleculerError) => {
				assert.equal(err.code, 503);
				assert.equal(err.type, "UPSTREAM_DOWN");
				assert.equal(err.retryable, true, "a 5xx is retryable by default");
				return true;
			});
			await assert.rejects(b.call("target.other"));
			assert.equal(await b.call("greeter.hello").catch(e => e.type), "UPSTREAM_DOWN", "nested calls are hit too");
			await assert.rejects(b.call("target.viaGreeter"), { type: "UPSTREAM_DOWN" }, "an unmatched action calling a matched one");
			const text = await registry.metrics();
			assert.equal(metricValue(text, "lattice_faults_injected_total", { name: "target.ok", fault: "abort" }), 3);
			assert.equal(metricValue(text, "lattice_faults_injected_total", { name: "target.other", fault: "abort" }), 1);
		} finally {
			await b.stop();
		}
	});

	test("a default abort is a retryable 500 of type LATTICE_FAULT_INJECTED; a 4xx is not retryable", async () => {
		const { b } = await broker([
			{ match: "target.ok", abort: {} },
			{ match: "target.other", abort: { code: 429 } }
		]);
		try {
			await assert.rejects(b.call("target.ok"), { code: 500, type: ErrorType.FAULT_INJECTED, retryable: true });
			await assert.rejects(b.call("target.other"), { code: 429, type: ErrorType.FAULT_INJECTED, retryable: false });
		} finally {
			await b.stop();
		}
	});

	test("percentages abort that share of calls", async () => {
		const { b } = await broker([{ match: "target.ok", abort: { percent: 30 } }], { random: evenly(100) });
		try {
			let failed = 0;
			for (let i = 0; i < 1000; i++) await b.call("target.ok").catch(() => failed++);
			assert.equal(failed, 300);
		} finally {
			await b.stop();
		}
	});

	test("delays hold the call back (fixed, or uniform in a range) before the handler runs", async () => {
		const { b, registry } = await broker(
			[
				{ match: "target.ok", delay: { ms: 60 } },
				{ match: "target.other", delay: { ms: [100, 200] } }
			],
			{ random: () => 0.5 }
		);
		try {
			let t = performance.now();
			assert.equal(await b.call("target.ok"), "ok");
			assert.ok(performance.now() - t >= 55, "fixed delay");
			t = performance.now();
			assert.equal(await b.call("target.other"), "other");
			assert.ok(performance.now() - t >= 145, "half way through [100, 200]");
			assert.equal(metricValue(await registry.metrics(), "lattice_faults_injected_total", { fault: "delay" }), 2);
		} finally {
			await b.stop();
		}
	});

	test("a caller filter hits only calls made from that service", async () => {
		const { b } = await broker([{ match: "target.ok", caller: "greeter", abort: {} }]);
		try {
			assert.equal(await b.call("target.ok"), "ok", "a call from outside any service");
			assert.equal(await b.call("target.viaGreeter"), "ok", "a call from the target service");
			await assert.rejects(b.call("greeter.hello"), { type: ErrorType.FAULT_INJECTED });
		} finally {
			await b.stop();
		}
	});

	test("a nodeID filter compares the calling node", async () => {
		const { b } = await broker([{ match: "target.ok", nodeID: "elsewhere-*", abort: {} }]);
		try {
			assert.equal(await b.call("target.ok"), "ok");
		} finally {
			await b.stop();
		}
	});

	test("events: abort drops the handler, delay holds it; kind limits a rule to actions or events", async () => {
		const { b } = await broker([
			{ match: "thing.*", kind: "event", abort: {} },
			{ match: "**", kind: "action", delay: { ms: 1 } }
		]);
		try {
			events.length = 0;
			await b.emit("thing.happened");
			await new Promise(r => setTimeout(r, 20));
			assert.deepEqual(events, []);
			assert.equal(await b.call("target.ok"), "ok");
		} finally {
			await b.stop();
		}
		const delayed = await broker([{ match: "thing.happened", delay: { ms: 80 } }]);
		try {
			events.length = 0;
			const t = performance.now();
			// A local emit resolves once the handlers have run.
			await delayed.b.emit("thing.happened");
			assert.ok(performance.now() - t >= 75);
			assert.deepEqual(events, ["thing.happened"]);
		} finally {
			await delayed.b.stop();
		}
	});

	test("in Lattice's middleware order, an injected delay trips the action's timeout and an abort reaches its fallback", async () => {
		const faults = JSON.stringify([
			{ match: "dep.slow", delay: { ms: 400 } },
			{ match: "dep.broken", abort: { code: 503 } }
		]);
		const b = await createBroker({ LATTICE_FAULTS: faults }, [
			{
				name: "dep",
				actions: {
					// Moleculer's typings miss the per-action `timeout` the Timeout middleware reads.
					slow: { public: true, timeout: 100, handler: () => "late" } as ActionSchema,
					broken: { public: true, fallback: async () => "fallback", handler: () => "never" }
				}
			}
		]);
		try {
			await assert.rejects(b.call("dep.slow"), { type: "REQUEST_TIMEOUT" });
			assert.equal(await b.call("dep.broken"), "fallback");
		} finally {
			await b.stop();
		}
	});
});

describe("LATTICE_FAULTS parsing", () => {
	test("unset or blank means no rules", () => {
		assert.deepEqual(parseFaultRules(undefined), []);
		assert.deepEqual(parseFaultRules("  "), []);
	});

	test("a valid list is returned as is", () => {
		const rules = [
			{ match: "a.*", caller: "api", delay: { ms: [10, 20], percent: 5 } },
			{ match: "b.c", kind: "event", abort: { percent: 50, code: 503, type: "X", message: "m", retryable: false } }
		];
		assert.deepEqual(parseFaultRules(JSON.stringify(rules)), rules);
	});

	const bad: [string, RegExp][] = [
		["{", /not valid JSON/],
		['{"match":"a"}', /JSON array/],
		['[{"abort":{}}]', /rule 0: `match`/],
		['[{"match":"a"}]', /needs `delay`, `abort`/],
		['[{"match":"a","abort":{},"percent":5}]', /unknown field/],
		['[{"match":"a","abort":{"percent":101}}]', /abort.percent/],
		['[{"match":"a","abort":{"code":200}}]', /abort.code/],
		['[{"match":"a","delay":{"ms":-1}}]', /delay.ms/],
		['[{"match":"a","delay":{"ms":[20,10]}}]', /delay.ms/],
		['[{"match":"a","kind":"both","abort":{}}]', /kind/],
		['[{"match":"a","caller":"","abort":{}}]', /caller/]
	];
	for (const [json, message] of bad) {
		test(`refuses ${json}`, () => {
			assert.throws(() => parseFaultRules(json), (err: Errors.MoleculerError) => {
				assert.equal(err.type, ErrorType.CONFIG_INVALID);
				assert.match(err.message, message);
				return true;
			});
		});
	}
});

describe("fault injection in the config", () => {
	test("a bad LATTICE_FAULTS stops the node at startup", () => {
		assert.throws(() => buildConfig({ LATTICE_FAULTS: '[{"match":"a"}]' }), { type: ErrorType.CONFIG_INVALID });
	});
});
