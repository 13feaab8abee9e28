import type { IncomingMessage, ServerResponse } from "node:http";
import type * as OtelApi from "@opentelemetry/api";
import type { Attributes, AttributeValue, HrTime, Link, SpanContext as OtelSpanContext, SpanStatus } from "@opentelemetry/api";
import { createRequire } from "node:module";
import type { ReadableSpan, SpanProcessor, TimedEvent } from "@opentelemetry/sdk-trace";
import type { Resource } from "@opentelemetry/resources";
import type { Context, ServiceBroker } from "moleculer";
import { configError } from "./errors.ts";
import { activeSpan, extract, formatTraceparent, inject, newSpanId, newTraceId, ratioWord, runWithSpan, type ActiveSpan, type SpanContext } from "./trace-context.ts";

// The CommonJS build, which prom-client's default metrics already load: importing the ES build as well would put a
// second copy of the API (some 50 modules) in every node.
const { createTraceState, SpanKind, SpanStatusCode } = createRequire(import.meta.url)("@opentelemetry/api") as typeof OtelApi;
type SpanKind = OtelApi.SpanKind;

export { SpanKind };

/** The OTLP/HTTP encodings (OTEL_EXPORTER_OTLP_PROTOCOL); gRPC is not offered. */
export const OTLP_PROTOCOLS = ["http/protobuf", "http/json"] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

/** The OTEL_TRACES_SAMPLER values Lattice implements (the spec's built-in ones, without the Jaeger/X-Ray remotes). */
export const SAMPLERS = [
	"always_on",
	"always_off",
	"traceidratio",
	"parentbased_always_on",
	"parentbased_always_off",
	"parentbased_traceidratio"
] as const;
export type SamplerName = (typeof SAMPLERS)[number];

/** Decides, once per span, whether it is sampled; `parent` is null for a root span. */
export interface Sampler {
	sample(parent: SpanContext | null, traceId: string): boolean;
	/** Whether `sample` reads the trace id; if not, a root's id is only made when something asks for it. */
	readonly readsTraceId: boolean;
}

/** OpenTelemetry's TraceIdRatioBased test (see ratioWord), not the SDK's sampler: it runs for every new trace,
 * and the SDK's version validates the id with a regex and allocates a result each time. */
function ratioTest(ratio: number): (traceId: string) => boolean {
	const bound = ratio >= 1 ? 0x1_0000_0000 : Math.floor(ratio * 0xffff_ffff);
	return t => ratioWord(t) < bound;
}

export function createSampler(name: SamplerName, ratio = 1): Sampler {
	if (!(ratio >= 0 && ratio <= 1)) throw configError(`The sampling ratio must be between 0 and 1, got ${ratio}`);
	const ratioSampled = ratioTest(ratio);
	switch (name) {
		case "always_on":
			return { readsTraceId: false, sample: () => true };
		case "always_off":
			return { readsTraceId: false, sample: () => false };
		case "traceidratio":
			return { readsTraceId: true, sample: (_parent, traceId) => ratioSampled(traceId) };
		case "parentbased_always_on":
			return { readsTraceId: false, sample: parent => parent?.sampled ?? true };
		case "parentbased_always_off":
			return { readsTraceId: false, sample: parent => parent?.sampled ?? false };
		case "parentbased_traceidratio":
			return { readsTraceId: true, sample: (parent, traceId) => (parent ? parent.sampled : ratioSampled(traceId)) };
	}
}

/** Where a tracer's sampled spans go (made by lib/trace-exporter.ts, which loads the OpenTelemetry SDK). */
export interface SpanExport {
	/** Takes finished sampled spans (the batching exporter). */
	processor: SpanProcessor;
	/** What every exported span says produced it: service, node, host. */
	resource: Resource;
	/** Name and version of what produced the spans (OTLP's instrumentation scope). */
	scope: { name: string; version: string };
}

export interface TracerOptions {
	sampler: Sampler;
	/** Where sampled spans are exported; null propagates ids and records nothing. */
	export: SpanExport | null;
	/** Called once per finished span that is handed to the processor. */
	onRecorded?: () => void;
}

export interface StartSpanOptions {
	kind: SpanKind;
	/** The span this one runs under: a local span, or a context read from a carrier (then `remote`). */
	parent: SpanContext | null;
	remote?: boolean;
	/** When the work began, if before the span is made (epoch ms, from `nowMs()`). */
	startMs?: number;
}

const NO_ATTRIBUTES: Attributes = Object.freeze({});
const UNSET: SpanStatus = Object.freeze({ code: SpanStatusCode.UNSET });

/** Wall-clock time in ms with sub-ms precision, taken from the monotonic clock so durations never go negative. */
export function nowMs(): number {
	return performance.timeOrigin + performance.now();
}

function hrTime(ms: number): HrTime {
	const seconds = Math.floor(ms / 1000);
	const nanos = Math.round((ms - seconds * 1000) * 1e6);
	return nanos >= 1e9 ? [seconds + 1, nanos - 1e9] : [seconds, nanos];
}

function errorType(err: unknown): string {
	const e = err as { type?: unknown; name?: unknown } | null;
	if (e && typeof e.type === "string" && e.type) return e.type;
	if (e && typeof e.name === "string" && e.name) return e.name;
	return "Error";
}

/**
 * One unit of work: an action or event handled on this node, or an HTTP request at the gateway. Every span has
 * ids (they propagate and go into logs even when nothing is recorded); only a `recording` span keeps a name,
 * attributes, status and timings and is exported when it ends.
 */
export class Span implements ActiveSpan {
	readonly sampled: boolean;
	readonly traceState: string | undefined;
	/** True when sampled and an exporter is configured: only then are attributes worth computing. */
	readonly recording: boolean;
	ctx: Context | null = null;
	name: string;
	readonly kind: SpanKind;
	/** The span this one runs under, if any. */
	readonly parentContext: SpanContext | null;
	readonly remoteParent: boolean;
	private readonly tracer: Tracer;
	private readonly attributes: Attributes;
	private readonly startMs: number;
	private status: SpanStatus = UNSET;
	private events: TimedEvent[] | null = null;
	private ended = false;
	// Made on first read: a span nobody logs in, propagates or exports never pays for random ids.
	private ownTraceId: string | undefined;
	private ownSpanId: string | undefined;

	constructor(tracer: Tracer, name: string, opts: StartSpanOptions, traceId: string | undefined, sampled: boolean, recording: boolean) {
		const parent = opts.parent;
		this.tracer = tracer;
		this.name = name;
		this.kind = opts.kind;
		this.parentContext = parent;
		this.remoteParent = opts.remote === true;
		this.ownTraceId = traceId;
		this.traceState = parent?.traceState;
		this.sampled = sampled;
		this.recording = recording;
		this.attributes = recording ? {} : NO_ATTRIBUTES;
		this.startMs = recording ? (opts.startMs ?? nowMs()) : 0;
	}

	get traceId(): string {
		return (this.ownTraceId ??= this.parentContext ? this.parentContext.traceId : newTraceId());
	}

	get spanId(): string {
		return (this.ownSpanId ??= newSpanId());
	}

	/** The `traceparent` value that makes the receiver a child of this span. */
	traceparent(): string {
		return formatTraceparent(this);
	}

	setAttribute(key: string, value: AttributeValue | undefined): this {
		if (this.recording && value !== undefined) this.attributes[key] = value;
		return this;
	}

	/**
	 * Records a failure: `error.type` and an `exception` event as OpenTelemetry does, and status ERROR for server
	 * faults. A client error (code 4xx: bad params, not found, forbidden) leaves the status unset, as the HTTP
	 * conventions do for server spans, so error views show what the service got wrong, not what callers did.
	 */
	recordError(err: unknown): this {
		if (!this.recording) return this;
		const type = errorType(err);
		const message = err instanceof Error ? err.message : String(err);
		const code = (err as { code?: unknown } | null)?.code;
		if (!(typeof code === "number" && code >= 400 && code < 500)) this.status = { code: SpanStatusCode.ERROR, message };
		this.attributes["error.type"] = type;
		(this.events ??= []).push({
			name: "exception",
			time: hrTime(nowMs()),
			attributes: { "exception.type": type, "exception.message": message }
		});
		return this;
	}

	/** An error status without an exception (e.g. an HTTP 5xx answered without a thrown error). */
	setError(message: string): this {
		if (this.recording) this.status = { code: SpanStatusCode.ERROR, message };
		return this;
	}

	end(): void {
		if (this.ended) return;
		this.ended = true;
		if (this.recording) this.tracer.record(this, nowMs());
	}

	/** The span as OpenTelemetry's exporters take it; called by the tracer once the span has ended. */
	toReadable(endMs: number, to: SpanExport): ReadableSpan {
		return new ExportedSpan(this, this.status, this.attributes, this.events ?? NO_EVENTS, this.startMs, endMs, to);
	}
}

const NO_EVENTS: TimedEvent[] = [];
const NO_LINKS: Link[] = [];

/**
 * A finished span as OpenTelemetry's processors and exporters read it: one object holding what they read, making
 * the span context and HrTimes only when read. Building that graph eagerly (a context and its closure, a parent
 * context, three HrTimes, the record) showed as about 1.4 of a sampled span's ~10 µs in a profile of a serving
 * process. The `Span` itself is not handed over: it keeps the Moleculer context, which the export queue would then
 * hold until its batch leaves.
 */
class ExportedSpan implements ReadableSpan {
	readonly name: string;
	readonly kind: SpanKind;
	readonly status: SpanStatus;
	readonly attributes: Attributes;
	readonly events: TimedEvent[];
	readonly parentSpanContext: OtelSpanContext | undefined;
	readonly resource: Resource;
	readonly instrumentationScope: { name: string; version: string };
	private readonly traceId: string;
	private readonly spanId: string;
	private readonly traceState: string | undefined;
	private readonly startMs: number;
	private readonly endMs: number;
	private context: OtelSpanContext | undefined;

	constructor(span: Span, status: SpanStatus, attributes: Attributes, events: TimedEvent[], startMs: number, endMs: number, to: SpanExport) {
		this.name = span.name;
		this.kind = span.kind;
		this.status = status;
		this.attributes = attributes;
		this.events = events;
		this.traceId = span.traceId;
		this.spanId = span.spanId;
		this.traceState = span.traceState;
		this.startMs = startMs;
		this.endMs = endMs;
		this.resource = to.resource;
		this.instrumentationScope = to.scope;
		const parent = span.parentContext;
		this.parentSpanContext = parent
			? { traceId: parent.traceId, spanId: parent.spanId, traceFlags: parent.sampled ? 1 : 0, isRemote: span.remoteParent }
			: undefined;
	}

	spanContext(): OtelSpanContext {
		return (this.context ??= {
			traceId: this.traceId,
			spanId: this.spanId,
			traceFlags: 1,
			traceState: this.traceState ? createTraceState(this.traceState) : undefined
		});
	}

	get startTime(): HrTime {
		return hrTime(this.startMs);
	}

	get endTime(): HrTime {
		return hrTime(this.endMs);
	}

	get duration(): HrTime {
		return hrTime(this.endMs - this.startMs);
	}

	get links(): Link[] {
		return NO_LINKS;
	}

	get ended(): boolean {
		return true;
	}

	get droppedAttributesCount(): number {
		return 0;
	}

	get droppedEventsCount(): number {
		return 0;
	}

	get droppedLinksCount(): number {
		return 0;
	}
}

/** Ended spans beyond which recording hands them over at once (the processor's own queue bound applies after). */
const MAX_DEFERRED = 1024;

/** How long ended spans wait to be handed over. One timer serves every span ended meanwhile: at 0 ms a busy server
 * armed one per event-loop turn, over a thousand a second, for spans the exporter batches for seconds anyway. */
const DRAIN_DELAY_MS = 20;

/** Starts spans, decides sampling and hands finished sampled spans to the processor (batching exporter). */
export class Tracer {
	private readonly sampler: Sampler;
	private readonly to: SpanExport | null;
	private readonly onRecorded: (() => void) | undefined;
	/** Ended spans not yet handed to the processor, as span, end time pairs. */
	private ended: Array<Span | number> = [];
	private drainTimer: NodeJS.Timeout | undefined;

	constructor(opts: TracerOptions) {
		this.sampler = opts.sampler;
		this.to = opts.export;
		this.onRecorded = opts.onRecorded;
	}

	/** Whether spans are exported at all; without an exporter only ids are propagated. */
	get exporting(): boolean {
		return this.to !== null;
	}

	startSpan(name: string, opts: StartSpanOptions): Span {
		const parent = opts.parent;
		// A ratio sampler decides on the trace id, so a root's is made up front; the others never read it.
		const reads = this.sampler.readsTraceId;
		const traceId = !parent && reads ? newTraceId() : undefined;
		const sampled = this.sampler.sample(parent, reads ? (traceId ?? parent!.traceId) : "");
		return new Span(this, name, opts, traceId, sampled, sampled && this.to !== null);
	}

	/**
	 * Takes an ended recording span. It reaches the processor a little later (DRAIN_DELAY_MS), not now: a span
	 * ends as its handler settles, before the reply is sent, and building the exported span and queueing it (and,
	 * for every 512th, encoding a whole batch) would otherwise hold that reply and every other reply batched with
	 * it. Measured on a server at 10 % sampling: about 0.9 µs of each call's main-thread time went to recording.
	 */
	record(span: Span, endMs: number): void {
		if (!this.to) return;
		if (this.ended.push(span, endMs) >= MAX_DEFERRED * 2) this.drain();
		else this.drainTimer ??= setTimeout(this.drain, DRAIN_DELAY_MS).unref();
	}

	/** Hands every ended span to the processor. A timer, not setImmediate: an immediate queued as the first span
	 * ends would run before the one that sends the batched replies. */
	private readonly drain = (): void => {
		if (this.drainTimer) clearTimeout(this.drainTimer);
		this.drainTimer = undefined;
		const ended = this.ended;
		this.ended = [];
		const to = this.to!;
		for (let i = 0; i < ended.length; i += 2) {
			to.processor.onEnd((ended[i] as Span).toReadable(ended[i + 1] as number, to));
			this.onRecorded?.();
		}
	};

	/** Exports what is queued; resolves (never rejects) within the processor's export timeout. */
	async flush(): Promise<void> {
		if (!this.to) return;
		this.drain();
		await this.to.processor.forceFlush().catch(() => undefined);
	}

	async shutdown(): Promise<void> {
		if (!this.to) return;
		this.drain();
		await this.to.processor.shutdown().catch(() => undefined);
	}
}

const tracers = new WeakMap<ServiceBroker, Tracer>();

/** Called by the tracing middleware when the broker is created. */
export function registerTracer(broker: ServiceBroker, tracer: Tracer): void {
	tracers.set(broker, tracer);
}

export function tracerOf(broker: ServiceBroker): Tracer | undefined {
	return tracers.get(broker);
}

/** Call options property through which the gateway hands its HTTP span to the `rest` action it calls. */
export const HTTP_SPAN = Symbol("lattice.httpSpan");

/**
 * The gateway's part of tracing, called from moleculer-web's `rootCallOptions`: continues the caller's trace
 * from `traceparent`/`tracestate` (or starts one), returns `traceparent` in the response, and records the request
 * as a SERVER span that ends when the response does. The span becomes the `rest` action's own, so every action
 * the request calls is its child. Without a tracer on the broker it does nothing.
 */
export function traceHttpRequest(broker: ServiceBroker, options: object, req: IncomingMessage, res: ServerResponse): void {
	const tracer = tracerOf(broker);
	if (!tracer) return;
	const parent = extract(req.headers);
	const method = req.method ?? "GET";
	const span = tracer.startSpan(method, { kind: SpanKind.SERVER, parent, remote: parent !== null });
	if (span.recording) {
		const url = req.url ?? "/";
		const q = url.indexOf("?");
		span
			.setAttribute("http.request.method", method)
			.setAttribute("url.path", q === -1 ? url : url.slice(0, q))
			.setAttribute("url.scheme", (req.socket as { encrypted?: boolean }).encrypted ? "https" : "http")
			.setAttribute("user_agent.original", req.headers["user-agent"]);
	}
	(options as { [HTTP_SPAN]?: Span })[HTTP_SPAN] = span;
	res.setHeader("traceparent", span.traceparent());
	res.once("close", () => {
		if (span.recording) {
			// moleculer-web leaves the matched alias on the request: its path template names the span.
			const route = (req as { $alias?: { fullPath?: string } }).$alias?.fullPath;
			if (route) {
				span.name = `${method} ${route}`;
				span.setAttribute("http.route", route);
			}
			span.setAttribute("http.response.status_code", res.statusCode);
			// Per the HTTP conventions only 5xx make a server span an error; a 4xx is the client's.
			if (res.statusCode >= 500) span.setAttribute("error.type", String(res.statusCode)).setError(`HTTP ${res.statusCode}`);
			else if (!res.writableFinished) span.setError("Connection closed before the response was sent");
		}
		span.end();
	});
}

/**
 * The sending side of a channel message (lib/channels): its headers carry the active trace context, so the
 * consumer continues the trace whenever and wherever it runs. Headers the sender set win.
 */
export function traceHeaders(headers?: Record<string, string>): Record<string, string> | undefined {
	const span = activeSpan();
	if (!span) return headers;
	return { ...(inject(span) as Record<string, string>), ...headers };
}

export interface TracedMessage {
	id: string;
	channel: string;
	group: string;
	delivery: number;
	headers: Record<string, string>;
}

/**
 * The consuming side: handling `msg` is a CONSUMER span, child of the sender's span (from the message headers),
 * active for logs and calls while `run` runs, failed if it throws. Each redelivery is its own span. Without a
 * tracer on the broker it just runs.
 */
export async function traceChannelMessage<T>(broker: ServiceBroker, msg: TracedMessage, ctx: Context | null, run: () => T | Promise<T>): Promise<T> {
	const tracer = tracerOf(broker);
	if (!tracer) return run();
	// Header names may come back from the broker in another case.
	const headers = Object.fromEntries(Object.entries(msg.headers).map(([k, v]) => [k.toLowerCase(), v]));
	const parent = extract(headers);
	const span = tracer.startSpan(`process ${msg.channel}`, { kind: SpanKind.CONSUMER, parent, remote: parent !== null });
	span
		.setAttribute("messaging.system", "lattice-channels")
		.setAttribute("messaging.operation.type", "process")
		.setAttribute("messaging.destination.name", msg.channel)
		.setAttribute("messaging.consumer.group.name", msg.group)
		.setAttribute("messaging.message.id", msg.id)
		.setAttribute("lattice.channel.delivery", msg.delivery);
	span.ctx = ctx;
	try {
		const result = await runWithSpan(span, run);
		span.end();
		return result;
	} catch (err) {
		span.recordError(err).end();
		throw err;
	}
}
