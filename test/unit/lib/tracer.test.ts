import { test } from "node:test";
import assert from "node:assert/strict";
import { stat } from "node:fs";
import { ROOT_CONTEXT, SpanStatusCode } from "@opentelemetry/api";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { InMemorySpanExporter, SamplingDecision, SimpleSpanProcessor, TraceIdRatioBasedSampler } from "@opentelemetry/sdk-trace";
import { Errors, ServiceBroker } from "moleculer";
import { activeSpan, newTraceId, runWithSpan } from "../../../lib/trace-context.ts";
import { createSampler, registerTracer, SpanKind, traceChannelMessage, traceHeaders, Tracer, type SamplerName } from "../../../lib/tracer.ts";

const SAMPLED = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true };
const UNSAMPLED = { ...SAMPLED, sampled: false };

function tracer(sampler: SamplerName = "parentbased_always_on", ratio = 1) {
	const exporter = new InMemorySpanExporter();
	const t = new Tracer({
		sampler: createSampler(sampler, ratio),
		export: {
			processor: new SimpleSpanProcessor({ exporter }),
			resource: resourceFromAttributes({ "service.name": "test" }),
			scope: { name: "lattice", version: "0.0.0" }
		}
	});
	return { t, exporter };
}

test("samplers: parent-based ones follow the parent, the others decide alone", () => {
	const root = newTraceId();
	const decide = (name: SamplerName, parent: typeof SAMPLED | null, ratio = 1) =>
		createSampler(name, ratio).sample(parent, parent?.traceId ?? root);
	assert.equal(decide("parentbased_always_on", null), true);
	assert.equal(decide("parentbased_always_on", UNSAMPLED), false);
	assert.equal(decide("parentbased_always_off", null), false);
	assert.equal(decide("parentbased_always_off", SAMPLED), true);
	assert.equal(decide("parentbased_traceidratio", null, 0), false);
	assert.equal(decide("parentbased_traceidratio", SAMPLED, 0), true);
	assert.equal(decide("parentbased_traceidratio", UNSAMPLED, 1), false);
	assert.equal(decide("always_on", UNSAMPLED), true);
	assert.equal(decide("always_off", SAMPLED), false);
	assert.equal(decide("traceidratio", SAMPLED, 0), false);
	assert.throws(() => createSampler("traceidratio", 1.5), /between 0 and 1/);
});

test("ratio sampling decides exactly as OpenTelemetry's TraceIdRatioBased sampler", () => {
	for (const ratio of [0, 0.001, 0.1, 0.5, 0.999, 1]) {
		const ours = createSampler("traceidratio", ratio);
		const otel = new TraceIdRatioBasedSampler(ratio);
		const otelSampled = (id: string) => otel.shouldSample(ROOT_CONTEXT, id).decision === SamplingDecision.RECORD_AND_SAMPLED;
		const earlier: string[] = [];
		for (let i = 0; i < 2000; i++) {
			// A fresh root id is decided on from its random bytes, any other id from its hex digits: both must agree.
			const id = newTraceId();
			assert.equal(ours.sample(null, id), otelSampled(id), `${ratio} ${id} (fresh)`);
			earlier.push(id);
		}
		for (const id of earlier) assert.equal(ours.sample(null, id), otelSampled(id), `${ratio} ${id} (from hex)`);
	}
});

test("ratio sampling keeps about the ratio of traces, the same decision for the same trace id", () => {
	const s = createSampler("traceidratio", 0.25);
	const ids = Array.from({ length: 8000 }, newTraceId);
	const kept = ids.filter(id => s.sample(null, id)).length / ids.length;
	assert.ok(kept > 0.2 && kept < 0.3, `kept ${kept}`);
	for (const id of ids.slice(0, 100)) assert.equal(s.sample(null, id), s.sample(null, id));
	assert.equal(createSampler("traceidratio", 0.25).readsTraceId, true);
	assert.equal(createSampler("parentbased_always_on").readsTraceId, false);
});

test("a span continues its parent's trace and trace state, and is exported with the parent link", async () => {
	const { t, exporter } = tracer();
	const parent = { ...SAMPLED, traceState: "rojo=1" };
	const span = t.startSpan("orders.place", { kind: SpanKind.SERVER, parent, remote: true });
	span.setAttribute("rpc.method", "place").setAttribute("skipped", undefined);
	assert.equal(span.traceId, parent.traceId);
	assert.notEqual(span.spanId, parent.spanId);
	assert.equal(span.traceparent(), `00-${parent.traceId}-${span.spanId}-01`);
	span.end();
	span.end();
	await t.flush();
	const [out, ...rest] = exporter.getFinishedSpans();
	assert.equal(rest.length, 0, "ending twice exports once");
	assert.equal(out!.name, "orders.place");
	assert.equal(out!.kind, SpanKind.SERVER);
	assert.deepEqual(out!.attributes, { "rpc.method": "place" });
	assert.equal(out!.spanContext().spanId, span.spanId);
	assert.equal(out!.spanContext().traceState?.serialize(), "rojo=1");
	assert.equal(out!.parentSpanContext?.spanId, parent.spanId);
	assert.equal(out!.parentSpanContext?.isRemote, true);
	assert.equal(out!.resource.attributes["service.name"], "test");
	const [s, ns] = out!.duration;
	assert.ok(s >= 0 && ns >= 0);
});

test("an ended span reaches the processor a moment later, so it never delays the reply; a burst is handed over at once", async () => {
	const { t, exporter } = tracer();
	// As on a server: the span ends in an I/O callback, and packet batching sends the replies in an immediate.
	const inTheReplyImmediate = await new Promise<number>(resolve =>
		stat(import.meta.filename, () => {
			t.startSpan("a", { kind: SpanKind.INTERNAL, parent: null }).end();
			assert.equal(exporter.getFinishedSpans().length, 0, "not while the handler's reply is still being sent");
			setImmediate(() => resolve(exporter.getFinishedSpans().length));
		})
	);
	assert.equal(inTheReplyImmediate, 0, "not before the immediate that sends batched replies");
	const handedOver = Date.now();
	while (exporter.getFinishedSpans().length === 0 && Date.now() - handedOver < 1000) await new Promise(resolve => setTimeout(resolve, 5));
	assert.equal(exporter.getFinishedSpans().length, 1, "handed over a moment later, without a flush");

	// A turn that ends this many spans is already slow: waiting would only let them pile up.
	for (let i = 0; i < 1024; i++) t.startSpan(`s${i}`, { kind: SpanKind.INTERNAL, parent: null }).end();
	assert.equal(exporter.getFinishedSpans().length, 1025);
});

test("an unsampled span has ids but records and exports nothing", async () => {
	const { t, exporter } = tracer();
	const span = t.startSpan("x", { kind: SpanKind.INTERNAL, parent: UNSAMPLED });
	assert.equal(span.recording, false);
	assert.equal(span.traceparent(), `00-${UNSAMPLED.traceId}-${span.spanId}-00`);
	span.setAttribute("a", 1).recordError(new Error("boom")).end();
	await t.flush();
	assert.equal(exporter.getFinishedSpans().length, 0);
});

test("a non-parent-based ratio sampler decides on the parent's trace id", () => {
	const { t } = tracer("traceidratio", 1);
	assert.equal(t.startSpan("x", { kind: SpanKind.INTERNAL, parent: UNSAMPLED }).sampled, true);
	const { t: never } = tracer("traceidratio", 0);
	assert.equal(never.startSpan("x", { kind: SpanKind.INTERNAL, parent: SAMPLED }).sampled, false);
});

test("a root span gets a new trace id; its children share it", () => {
	const { t } = tracer();
	const root = t.startSpan("root", { kind: SpanKind.INTERNAL, parent: null });
	const child = t.startSpan("child", { kind: SpanKind.INTERNAL, parent: root });
	assert.match(root.traceId, /^[0-9a-f]{32}$/);
	assert.equal(child.traceId, root.traceId);
	assert.notEqual(child.spanId, root.spanId);
});

test("server faults set status ERROR; client errors (4xx) record the error but leave the status unset", async () => {
	const { t, exporter } = tracer();
	t.startSpan("a", { kind: SpanKind.INTERNAL, parent: null }).recordError(new Errors.MoleculerError("disk on fire", 500, "DISK")).end();
	t.startSpan("b", { kind: SpanKind.INTERNAL, parent: null }).recordError(new Errors.ValidationError("bad params")).end();
	t.startSpan("c", { kind: SpanKind.INTERNAL, parent: null }).recordError(new TypeError("undefined is not a function")).end();
	await t.flush();
	const [a, b, c] = exporter.getFinishedSpans();
	assert.deepEqual(a!.status, { code: SpanStatusCode.ERROR, message: "disk on fire" });
	assert.equal(a!.attributes["error.type"], "DISK");
	assert.equal(a!.events[0]!.name, "exception");
	assert.equal(a!.events[0]!.attributes?.["exception.message"], "disk on fire");
	assert.equal(b!.status.code, SpanStatusCode.UNSET);
	assert.equal(b!.attributes["error.type"], "VALIDATION_ERROR");
	assert.equal(c!.status.code, SpanStatusCode.ERROR);
	assert.equal(c!.attributes["error.type"], "TypeError");
});

test("without an export spans are never recording", () => {
	const t = new Tracer({
		sampler: createSampler("always_on"),
		export: null
	});
	const span = t.startSpan("x", { kind: SpanKind.INTERNAL, parent: null });
	assert.equal(t.exporting, false);
	assert.equal(span.sampled, true, "the decision still propagates downstream");
	assert.equal(span.recording, false);
});

test("channel messages: the sender's trace goes into the headers and the consumer continues it", async () => {
	const exporter = new InMemorySpanExporter();
	const broker = new ServiceBroker({ logger: false, nodeID: "chan" });
	const t = new Tracer({
		sampler: createSampler("parentbased_always_on"),
		export: { processor: new SimpleSpanProcessor({ exporter }), resource: resourceFromAttributes({}), scope: { name: "lattice", version: "0" } }
	});
	registerTracer(broker, t);
	assert.deepEqual(traceHeaders({ a: "1" }), { a: "1" }, "outside a trace the headers are untouched");
	const sender = t.startSpan("orders.place", { kind: SpanKind.INTERNAL, parent: null });
	const headers = runWithSpan(sender, () => traceHeaders({ a: "1" }))!;
	assert.equal(headers.traceparent, sender.traceparent());
	assert.equal(headers.a, "1");

	// Brokers may hand header names back in another case.
	const msg = { id: "m-1", channel: "orders.placed", group: "mail", delivery: 2, headers: { Traceparent: headers.traceparent! } };
	const seen = await traceChannelMessage(broker, msg, null, () => activeSpan()?.traceId);
	assert.equal(seen, sender.traceId);
	await assert.rejects(traceChannelMessage(broker, msg, null, () => Promise.reject(new Error("smtp down"))), /smtp down/);
	await t.flush();
	const [ok, failed] = exporter.getFinishedSpans();
	assert.equal(ok!.name, "process orders.placed");
	assert.equal(ok!.kind, SpanKind.CONSUMER);
	assert.equal(ok!.parentSpanContext?.spanId, sender.spanId);
	assert.equal(ok!.attributes["lattice.channel.delivery"], 2);
	assert.equal(failed!.status.code, SpanStatusCode.ERROR);
});
