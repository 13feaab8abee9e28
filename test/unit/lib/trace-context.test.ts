import { test } from "node:test";
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import {
	activeSpan,
	extract,
	formatTraceparent,
	inject,
	logCorrelation,
	newSpanId,
	newTraceId,
	parseTraceparent,
	parseTracestate,
	runDetachedWithSpan,
	runWithSpan,
	type ActiveSpan
} from "../../../lib/trace-context.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";

test("traceparent: the spec's example parses, with the sampled flag", () => {
	assert.deepEqual(parseTraceparent(`00-${TRACE}-${SPAN}-01`), { traceId: TRACE, spanId: SPAN, sampled: true });
	assert.deepEqual(parseTraceparent(`00-${TRACE}-${SPAN}-00`), { traceId: TRACE, spanId: SPAN, sampled: false });
	// Only bit 0 means sampled; other flags are ignored.
	assert.equal(parseTraceparent(`00-${TRACE}-${SPAN}-03`)?.sampled, true);
	assert.equal(parseTraceparent(`00-${TRACE}-${SPAN}-02`)?.sampled, false);
});

test("traceparent: everything the spec says to ignore is ignored", () => {
	for (const bad of [
		undefined,
		42,
		"",
		`00-${TRACE.toUpperCase()}-${SPAN}-01`,
		`ff-${TRACE}-${SPAN}-01`,
		`00-00000000000000000000000000000000-${SPAN}-01`,
		`00-${TRACE}-0000000000000000-01`,
		`00-${TRACE}-${SPAN}-01-extra`,
		`00-${TRACE.slice(1)}-${SPAN}-01`,
		`00-${TRACE}-${SPAN}01`,
		`00-${TRACE}-${SPAN}-01, 00-${TRACE}-${SPAN}-01`,
		`0g-${TRACE}-${SPAN}-01`
	]) {
		assert.equal(parseTraceparent(bad), null, String(bad));
	}
});

test("traceparent: a higher version is read by its first four fields", () => {
	assert.deepEqual(parseTraceparent(`cc-${TRACE}-${SPAN}-01-what-comes-next`), { traceId: TRACE, spanId: SPAN, sampled: true });
	assert.equal(parseTraceparent(`cc-${TRACE}-${SPAN}-01what`), null);
});

test("traceparent: format is the inverse of parse", () => {
	const sc = { traceId: newTraceId(), spanId: newSpanId(), sampled: false };
	assert.deepEqual(parseTraceparent(formatTraceparent(sc)), sc);
	assert.equal(formatTraceparent({ traceId: TRACE, spanId: SPAN, sampled: true }), `00-${TRACE}-${SPAN}-01`);
});

test("tracestate: valid lists are kept (trimmed), invalid ones dropped whole", () => {
	assert.equal(parseTracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
	assert.equal(parseTracestate("tenant1@vendor=x,,a*b/c_d-e=1"), "tenant1@vendor=x,a*b/c_d-e=1");
	assert.equal(parseTracestate("Upper=1"), undefined);
	assert.equal(parseTracestate("a=1,a=2"), undefined, "duplicate keys");
	assert.equal(parseTracestate("a=b=c"), undefined);
	assert.equal(parseTracestate("a=caf\u00e9"), undefined, "non-ASCII value");
	assert.equal(parseTracestate("a=1,nokey"), undefined);
	assert.equal(parseTracestate(Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(",")), undefined, "more than 32 members");
	assert.equal(parseTracestate(`a=${"x".repeat(600)}`), undefined, "longer than 512");
	assert.equal(parseTracestate(""), undefined);
	assert.equal(parseTracestate(undefined), undefined);
});

test("extract and inject carry traceparent and tracestate through a header object", () => {
	const headers = { traceparent: `00-${TRACE}-${SPAN}-01`, tracestate: "rojo=1" };
	const sc = extract(headers);
	assert.deepEqual(sc, { traceId: TRACE, spanId: SPAN, sampled: true, traceState: "rojo=1" });
	assert.deepEqual(inject(sc!, {}), headers);
	assert.deepEqual(inject({ traceId: TRACE, spanId: SPAN, sampled: true }, { tracestate: "stale=1", other: 1 }), {
		traceparent: `00-${TRACE}-${SPAN}-01`,
		other: 1
	});
	assert.equal(extract({ traceparent: "nonsense", tracestate: "rojo=1" }), null);
	assert.equal(extract(undefined), null);
});

test("ids are lowercase hex of the right length and do not repeat", () => {
	const traces = new Set<string>();
	const spans = new Set<string>();
	for (let i = 0; i < 5000; i++) {
		const t = newTraceId();
		const s = newSpanId();
		assert.match(t, /^[0-9a-f]{32}$/);
		assert.match(s, /^[0-9a-f]{16}$/);
		traces.add(t);
		spans.add(s);
	}
	assert.equal(traces.size, 5000);
	assert.equal(spans.size, 5000);
});

test("the active span follows async work started inside runWithSpan, and only that work", async () => {
	const outer: ActiveSpan = { traceId: TRACE, spanId: SPAN, sampled: true, ctx: null };
	const inner: ActiveSpan = { traceId: TRACE, spanId: newSpanId(), sampled: true, ctx: null };
	assert.equal(activeSpan(), undefined);
	const seen = await runWithSpan(outer, async () => {
		await sleep(5);
		const a = activeSpan();
		const b = await runWithSpan(inner, async () => {
			await sleep(1);
			return activeSpan();
		});
		await new Promise(r => setImmediate(r));
		return [a, b, activeSpan()];
	});
	assert.deepEqual(seen, [outer, inner, outer]);
	assert.equal(activeSpan(), undefined);
});

test("a detached span runs alone in its async context, and the caller's context comes back exactly", async () => {
	const other = new AsyncLocalStorage<string>();
	const caller: ActiveSpan = { traceId: TRACE, spanId: SPAN, sampled: true, ctx: null };
	const span: ActiveSpan = { traceId: TRACE, spanId: "1111111111111111", sampled: true, ctx: null };
	let later: Promise<[ActiveSpan | undefined, string | undefined]> | undefined;
	await runWithSpan(caller, () =>
		other.run("caller's own", async () => {
			const inside = runDetachedWithSpan(
				span,
				(arg: string) => {
					later = sleep(1).then(() => [activeSpan(), other.getStore()]);
					return [arg, activeSpan(), other.getStore()] as const;
				},
				"arg"
			);
			assert.deepEqual(inside, ["arg", span, undefined]);
			assert.equal(activeSpan(), caller);
			assert.equal(other.getStore(), "caller's own");
			await sleep(1);
			assert.equal(activeSpan(), caller);
		})
	);
	assert.deepEqual(await later, [span, undefined]);
	assert.equal(activeSpan(), undefined);
	// A throwing fn restores the caller's context too.
	runWithSpan(caller, () => {
		assert.throws(() => runDetachedWithSpan(span, () => { throw new Error("boom"); }, undefined), /boom/);
		assert.equal(activeSpan(), caller);
	});
});

test("log correlation fields come from the active span and its Moleculer context", () => {
	assert.equal(logCorrelation(), undefined);
	const ctx = {
		requestID: "req-1",
		service: { fullName: "v2.orders" },
		action: { name: "v2.orders.place" },
		eventName: null
	} as unknown as ActiveSpan["ctx"];
	const fields = runWithSpan({ traceId: TRACE, spanId: SPAN, sampled: false, ctx }, logCorrelation);
	assert.deepEqual(fields, { traceId: TRACE, spanId: SPAN, requestId: "req-1", service: "v2.orders", action: "v2.orders.place" });
	const eventCtx = { requestID: "req-2", service: { fullName: "audit" }, action: null, eventName: "order.placed" } as unknown as ActiveSpan["ctx"];
	assert.deepEqual(runWithSpan({ traceId: TRACE, spanId: SPAN, sampled: true, ctx: eventCtx }, logCorrelation), {
		traceId: TRACE,
		spanId: SPAN,
		requestId: "req-2",
		service: "audit",
		event: "order.placed"
	});
});
