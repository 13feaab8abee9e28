import { test } from "node:test";
import assert from "node:assert/strict";
import { createTraceState, SpanKind, SpanStatusCode, type Attributes, type HrTime } from "@opentelemetry/api";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { Errors } from "moleculer";
import { createOtlpProtobufTraceSerializer, encodeSpans } from "../../../lib/otlp-protobuf.serializer.ts";
import { createSampler, Tracer } from "../../../lib/tracer.ts";

const RESOURCE = resourceFromAttributes({ "service.name": "orders", "service.instance.id": "node-1", "process.pid": 4242, "lattice.site": "edge-ö" });
const OTHER_RESOURCE = resourceFromAttributes({ "service.name": "gateway" });
const SCOPE = { name: "lattice", version: "1.2.3" };

function same(spans: ReadableSpan[]): void {
	const ours = Buffer.from(encodeSpans(spans));
	const theirs = Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!);
	if (ours.equals(theirs)) return;
	let at = 0;
	while (ours[at] === theirs[at]) at++;
	const around = (b: Buffer) => b.subarray(Math.max(0, at - 24), at + 24).toString("hex");
	assert.fail(`${ours.length} bytes against ${theirs.length}, first difference at byte ${at}:\n  ours   ${around(ours)}\n  theirs ${around(theirs)}`);
}

/** Spans as Lattice's tracer exports them. */
async function traced(): Promise<ReadableSpan[]> {
	const exporter = new InMemorySpanExporter();
	const tracer = new Tracer({
		sampler: createSampler("always_on"),
		export: { processor: new SimpleSpanProcessor({ exporter }), resource: RESOURCE, scope: SCOPE }
	});
	const root = tracer.startSpan("GET /api/orders/:id", { kind: SpanKind.SERVER, parent: null });
	root.setAttribute("http.request.method", "GET").setAttribute("http.response.status_code", 200).setAttribute("url.path", "/api/orders/7");
	const child = tracer.startSpan("orders.get", { kind: SpanKind.INTERNAL, parent: root });
	child
		.setAttribute("rpc.system", "moleculer")
		.setAttribute("moleculer.call_level", 2)
		.setAttribute("moleculer.cache_hit", true)
		.setAttribute("ratio", 0.25)
		.setAttribute("negative", -7)
		.setAttribute("big", 2 ** 40)
		.setAttribute("tags", ["a", "b"])
		.setAttribute("long", "x".repeat(300))
		.setAttribute("unicode", "Ünïcødé ✓ 😀");
	const failed = tracer.startSpan("payments.charge", { kind: SpanKind.SERVER, parent: { traceId: root.traceId, spanId: "00f067aa0ba902b7", sampled: true, traceState: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE" }, remote: true });
	failed.recordError(new Errors.MoleculerError("card declined", 500, "CARD_DECLINED"));
	const client = tracer.startSpan("stock.check", { kind: SpanKind.CLIENT, parent: failed });
	client.recordError(new Errors.ValidationError("bad qty", "VALIDATION_ERROR", {})).setError("and a status message");
	for (const s of [child, failed, client, root]) s.end();
	await tracer.flush();
	return exporter.getFinishedSpans();
}

test("OTLP protobuf: Lattice's spans encode byte for byte as OpenTelemetry's serializer encodes them", async () => {
	const spans = await traced();
	assert.equal(spans.length, 4);
	same(spans);
	same(spans.slice(0, 1));
	same([]);
});

test("OTLP protobuf: any ReadableSpan, with links, events, every attribute type and several resources and scopes", () => {
	const time = (s: number, ns: number): HrTime => [s, ns];
	const base = (name: string, over: Partial<ReadableSpan> = {}): ReadableSpan =>
		({
			name,
			kind: SpanKind.PRODUCER,
			spanContext: () => ({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 1, traceState: createTraceState("a=1") }),
			parentSpanContext: undefined,
			startTime: time(1_764_000_000, 123_456_789),
			endTime: time(1_764_000_001, 999_999_999),
			status: { code: SpanStatusCode.OK },
			attributes: {},
			links: [],
			events: [],
			duration: time(1, 876_543_210),
			ended: true,
			resource: RESOURCE,
			instrumentationScope: SCOPE,
			droppedAttributesCount: 0,
			droppedEventsCount: 0,
			droppedLinksCount: 0,
			...over
		}) as ReadableSpan;
	const everyType: Attributes & Record<string, unknown> = {
		s: "text",
		b: false,
		i: 0,
		neg: -(2 ** 40),
		d: Math.PI,
		inf: Infinity,
		arr: [1, 2.5, "three", true, null],
		bytes: new Uint8Array([0, 255, 7]),
		kv: { nested: { deeper: "yes" }, n: 1 },
		many: "y".repeat(20_000)
	};
	same([
		base("with everything", {
			attributes: everyType as Attributes,
			parentSpanContext: { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "b7ad6b7169203331", traceFlags: 1, isRemote: false },
			links: [
				{ context: { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b9c7c989f97918e1", traceFlags: 0, isRemote: true }, attributes: { why: "fan-in" } },
				{ context: { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b9c7c989f97918e2", traceFlags: 1, traceState: createTraceState("k=v") }, droppedAttributesCount: 2 }
			],
			events: [{ name: "retry", time: time(1_764_000_000, 500), attributes: { attempt: 2 }, droppedAttributesCount: 1 }, { name: "bare", time: time(0, 0) }],
			droppedAttributesCount: 3,
			droppedEventsCount: 4,
			droppedLinksCount: 5,
			status: { code: SpanStatusCode.ERROR, message: "é".repeat(100) }
		}),
		base("other resource", { resource: OTHER_RESOURCE }),
		base("other scope", { instrumentationScope: { name: "custom", schemaUrl: "https://opentelemetry.io/schemas/1.30.0" } }),
		base("same scope again", { kind: SpanKind.INTERNAL })
	]);
});

test("OTLP protobuf: every batch gets a buffer of its own, since the exporter keeps one to retry it", async () => {
	const spans = await traced();
	const serializer = createOtlpProtobufTraceSerializer();
	const first = serializer.serializeRequest(spans)!;
	const copy = Buffer.from(first);
	serializer.serializeRequest(spans.slice(1));
	assert.deepEqual(Buffer.from(first), copy);
	assert.deepEqual(serializer.deserializeResponse(new Uint8Array()), {});
});
