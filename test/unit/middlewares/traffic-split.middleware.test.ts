import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker, type Errors, type Middleware } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { parseTrafficRules, TrafficSplitMiddleware, type TrafficRule } from "../../../middlewares/traffic-split.middleware.ts";
import { buildConfig } from "../../../moleculer.config.ts";

/** Brokers over Moleculer's in-process transporter: a caller with the rules, and replicas labelled by version. */
async function cluster(rules: TrafficRule[], versions: string[]) {
	const namespace = `split-${Math.random().toString(36).slice(2, 8)}`;
	const common = { namespace, transporter: "Fake", logger: false, skipProcessEventRegistration: true } as const;
	// Moleculer's typings declare the `call` hook as returning a promise; it returns the wrapped function.
	const split = TrafficSplitMiddleware({ rules }) as unknown as Middleware;
	const caller = new ServiceBroker({ ...common, nodeID: "caller", middlewares: [split] });
	const replicas = versions.map(
		(v, i) =>
			new ServiceBroker({ ...common, nodeID: `r${i}-v${v}`, metadata: { version: v } })
	);
	for (const r of replicas) r.createService({ name: "svc", actions: { who: () => r.nodeID } });
	await Promise.all([caller, ...replicas].map(b => b.start()));
	await caller.waitForServices("svc");
	await new Promise(r => setTimeout(r, 100));
	return { caller, stop: () => Promise.all([caller, ...replicas].map(b => b.stop())) };
}

describe("traffic split middleware", () => {
	test("without rules it does not wrap calls", () => {
		const next = () => Promise.resolve();
		assert.equal(TrafficSplitMiddleware().call(next), next);
	});

	test("weights of 0 and 100 send everything to one version; sticky keys always land on the same one", async () => {
		const { caller, stop } = await cluster([{ service: "svc", weights: { "1": 0, "2": 100 } }], ["1", "1", "2"]);
		try {
			const answers = await Promise.all(Array.from({ length: 30 }, () => caller.call<string>("svc.who")));
			assert.deepEqual(new Set(answers), new Set(["r2-v2"]));
		} finally {
			await stop();
		}
		const sticky = await cluster([{ service: "svc", weights: { "1": 50, "2": 50 }, sticky: "params.key" }], ["1", "2"]);
		try {
			for (const key of ["a", "b", "c", "d", "e", "f"]) {
				const answers = await Promise.all(Array.from({ length: 10 }, () => sticky.caller.call<string, object>("svc.who", { key })));
				assert.equal(new Set(answers).size, 1, `key ${key} stayed on one version`);
			}
		} finally {
			await sticky.stop();
		}
	});

	test("a pinned version wins over weights; a version with no replica falls back to the others", async () => {
		const { caller, stop } = await cluster([{ service: "svc", weights: { "1": 100, "2": 0, "3": 0 } }], ["1", "2"]);
		try {
			const pinned = await caller.call<string, object>("svc.who", {}, { meta: { latticeVersion: "2" } });
			assert.equal(pinned, "r1-v2");
			const unknownPin = await caller.call<string, object>("svc.who", {}, { meta: { latticeVersion: "9" } });
			assert.equal(unknownPin, "r0-v1", "an unknown pin is ignored");
		} finally {
			await stop();
		}
		const gone = await cluster([{ service: "svc", weights: { "3": 100 } }], ["1"]);
		try {
			assert.equal(await gone.caller.call("svc.who"), "r0-v1");
		} finally {
			await gone.stop();
		}
	});
});

describe("LATTICE_TRAFFIC and LATTICE_VERSION", () => {
	test("rules parse; LATTICE_VERSION labels the node", () => {
		const rules = [{ service: "greeter", weights: { "1": 90, "2": 10 }, sticky: "meta.user.id" }];
		assert.deepEqual(parseTrafficRules(JSON.stringify(rules)), rules);
		assert.deepEqual(parseTrafficRules(""), []);
		assert.equal((buildConfig({ LATTICE_VERSION: "2" }).metadata as { version?: string }).version, "2");
		assert.equal((buildConfig({}).metadata as { version?: string }).version, undefined);
	});

	const bad: [string, RegExp][] = [
		["[", /not valid JSON/],
		['{"service":"a"}', /JSON array/],
		['[{"weights":{"1":1}}]', /`service`/],
		['[{"service":"a"}]', /`weights`/],
		['[{"service":"a","weights":{"1":-1}}]', /non-negative/],
		['[{"service":"a","weights":{"1":0}}]', /at least one above 0/],
		['[{"service":"a","weights":{"1":1},"sticky":"user.id"}]', /sticky/],
		['[{"service":"a","weights":{"1":1}},{"service":"a","weights":{"2":1}}]', /second rule/],
		['[{"service":"a","weights":{"1":1},"mirror":true}]', /unknown field/]
	];
	for (const [json, message] of bad) {
		test(`refuses ${json}`, () => {
			assert.throws(() => parseTrafficRules(json), (err: Errors.MoleculerError) => {
				assert.equal(err.type, ErrorType.CONFIG_INVALID);
				assert.match(err.message, message);
				return true;
			});
		});
	}
});
