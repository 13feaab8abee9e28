import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { JsMsg } from "nats";
import type { Errors } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { factNames, FactCollector, type Fact } from "../../../lib/facts.ts";

/** A delivered JetStream message, recording what the collector did with it. */
function delivery(subject: string, body: unknown) {
	const done: string[] = [];
	const msg = {
		subject,
		seq: 1,
		json: () => (typeof body === "string" ? JSON.parse(body) : body),
		ack: () => void done.push("ack"),
		term: () => void done.push("term"),
		working: () => void done.push("working")
	};
	return { msg: msg as unknown as JsMsg, done };
}

const quiet = { warn() {}, info() {} };

function collector(handle: (fact: Fact, site: string) => unknown) {
	const c = new FactCollector({ namespace: "ns", hubDomain: "hub", sites: ["site-a"], topic: "telemetry", durable: "t", handle, logger: quiet, retryDelay: 1 });
	// The per-message step of the consume loop, without a NATS server behind it.
	const process = (c as unknown as { process(m: JsMsg): Promise<void> }).process.bind(c);
	return { c, process };
}

const fact = (seq: number, source = "site-a/s1"): Fact => ({ id: `${source}:${seq}`, source, seq, data: { v: seq } });
const SUBJECT = factNames("ns").subject("site-a", "telemetry");

describe("fact names", () => {
	test("subjects and streams per namespace, site and topic", () => {
		const n = factNames("my.ns");
		assert.equal(n.subject("plant-7", "telemetry"), "lattice.my_ns.facts.plant-7.telemetry");
		assert.equal(n.siteFilter("plant-7"), "lattice.my_ns.facts.plant-7.>");
		assert.equal(n.topicFilter("telemetry"), "lattice.my_ns.facts.*.telemetry");
		assert.equal(n.outbox("plant-7"), "LATTICE_my_ns_OUTBOX_plant-7");
		assert.equal(n.hub, "LATTICE_my_ns_FACTS");
	});

	test("a site or topic that would break a subject is refused", () => {
		for (const bad of ["a.b", "a*", ">", "", "a b"]) {
			assert.throws(() => factNames("ns").subject(bad, "t"), (err: Errors.MoleculerError) => err.type === ErrorType.CONFIG_INVALID);
		}
		assert.throws(() => new FactCollector({ namespace: "ns", hubDomain: "hub", sites: ["a.b"], topic: "t", durable: "t", handle() {}, logger: quiet }));
	});
});

describe("FactCollector, one delivery at a time", () => {
	test("handles each fact once and acks it after the handler", async () => {
		const seen: string[] = [];
		const { c, process } = collector((f, site) => void seen.push(`${site}:${f.id}`));
		for (const seq of [1, 2, 3]) {
			const d = delivery(SUBJECT, fact(seq));
			await process(d.msg);
			assert.deepEqual(d.done, ["ack"]);
		}
		assert.deepEqual(seen, ["site-a:site-a/s1:1", "site-a:site-a/s1:2", "site-a:site-a/s1:3"]);
		assert.deepEqual(c.stats, { handled: 3, duplicates: 0, gaps: 0, invalid: 0 });
	});

	test("a redelivery or resync copy is acked without calling the handler", async () => {
		let calls = 0;
		const { c, process } = collector(() => void calls++);
		await process(delivery(SUBJECT, fact(1)).msg);
		await process(delivery(SUBJECT, fact(2)).msg);
		const again = delivery(SUBJECT, fact(1));
		await process(again.msg);
		assert.deepEqual(again.done, ["ack"]);
		assert.equal(calls, 2);
		// Order is kept per source: another source starts its own count.
		await process(delivery(SUBJECT, fact(1, "site-a/s2")).msg);
		assert.equal(calls, 3);
		assert.equal(c.stats.duplicates, 1);
	});

	test("a failing handler is retried in place until it succeeds, so nothing behind it overtakes it", async () => {
		let failures = 2;
		const { c, process } = collector(() => {
			if (failures-- > 0) throw new Error("database down");
		});
		const d = delivery(SUBJECT, fact(1));
		await process(d.msg);
		assert.deepEqual(d.done, ["working", "working", "ack"]);
		assert.equal(c.stats.handled, 1);
	});

	test("a gap in a source's sequence is counted, the fact still handled", async () => {
		const { c, process } = collector(() => undefined);
		await process(delivery(SUBJECT, fact(1)).msg);
		await process(delivery(SUBJECT, fact(5)).msg);
		assert.equal(c.stats.gaps, 1);
		assert.equal(c.stats.handled, 2);
	});

	test("something that is not a fact is terminated, not retried", async () => {
		const { c, process } = collector(() => assert.fail("handler called"));
		for (const body of ["{not json", { id: "x", source: "s", seq: 0 }, { id: 1, source: "s", seq: 1 }]) {
			const d = delivery(SUBJECT, body);
			await process(d.msg);
			assert.deepEqual(d.done, ["term"]);
		}
		assert.equal(c.stats.invalid, 3);
	});
});
