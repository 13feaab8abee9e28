import { Counter, type Registry } from "prom-client";
import type { ActionSchema, Context, EventSchema, Service, ServiceBroker } from "moleculer";
import { activeSpan, extract, inject, runDetachedWithSpan, runWithSpan, type SpanContext } from "../lib/trace-context.ts";
import { createSampler, HTTP_SPAN, nowMs, registerTracer, SpanKind, Tracer, type SamplerName, type Span, type SpanExport } from "../lib/tracer.ts";
import type { BatchOptions, ExporterSpec } from "../lib/trace-exporter.ts";
import { latticeSettings } from "../lib/settings.ts";

export interface TracingMiddlewareOptions {
	/** OTEL_TRACES_SAMPLER. Default "parentbased_always_on". */
	sampler?: SamplerName;
	/** OTEL_TRACES_SAMPLER_ARG for the ratio samplers. Default 1. */
	ratio?: number;
	/** Where spans are exported; null (default) propagates trace context and correlates logs, but records nothing. */
	exporter?: ExporterSpec | null;
	/** Batching and queue bounds of the exporter. */
	batch?: BatchOptions;
	/** OTEL_SERVICE_NAME. Default "lattice". */
	serviceName?: string;
	/** Default: this package's version. */
	serviceVersion?: string;
	/** OTEL_RESOURCE_ATTRIBUTES. */
	resourceAttributes?: Record<string, string>;
	/** Where the exporter's own counters go (the node's /metrics registry). */
	registry?: Registry;
	/** How long stopping waits for queued spans to be sent. Default 3000 ms. */
	shutdownTimeoutMs?: number;
}

/** A Moleculer middleware (hook object); typed loosely because Moleculer's typings of the method hooks are wrong. */
export interface TracingMiddleware {
	name: string;
	[hook: string]: unknown;
}

const SPAN = Symbol("lattice.span");

/** A Moleculer context with the span of the handler that serves it. */
type Traced = Context & { [SPAN]?: Span };

type Handler = (ctx: Context) => Promise<unknown>;
type EmitFn = (eventName: string, payload?: unknown, opts?: unknown) => unknown;
type EmitOptions = { parentCtx?: Traced; headers?: Record<string, unknown>; groups?: string[] | string };

/** The span a context's handler runs under: its caller's (same process), the packet's headers (other node), or the async context. */
function parentOf(ctx: Context): { parent: SpanContext | null; remote: boolean } {
	const local = (ctx.options as EmitOptions | undefined)?.parentCtx?.[SPAN];
	if (local) return { parent: local, remote: false };
	const carried = extract(ctx.headers as Record<string, unknown>);
	if (carried) return { parent: carried, remote: true };
	return { parent: activeSpan() ?? null, remote: false };
}

/**
 * Ends a recording span when its work settles, with the outcome. On a side branch of the promise, which is
 * returned as it is: chaining would hold every sampled reply back by a microtask behind the unsampled ones.
 */
function finish<T>(span: Span, p: Promise<T>, ctx?: Context): Promise<T> {
	p.then(
		() => {
			if (ctx?.cachedResult) span.setAttribute("moleculer.cache_hit", true);
			span.end();
		},
		(err: unknown) => span.recordError(err).end()
	);
	return p;
}

function normalizeEmitOptions(opts: unknown): EmitOptions {
	if (opts == null) return {};
	if (Array.isArray(opts) || typeof opts === "string") return { groups: opts };
	return opts as EmitOptions;
}

/**
 * W3C trace context through the whole cluster, without Moleculer's tracer (its ids are not W3C, it copies every
 * params object into tags, and at 10 % sampling it cut local calls 5–7× when measured here). Every action and
 * event handler runs in a span that is in the async context (log lines carry its ids) and in the `traceparent`
 * header of every call and event it sends to another node, over any transporter. A sampled span is exported when
 * an exporter is configured; any other costs a small object and an async-context entry, its random ids being
 * made only if something (a log line, a remote call) reads them.
 *
 * Span shapes: an action handled here is SERVER when the caller is another node and INTERNAL otherwise; an
 * event handler is CONSUMER; an event emitted outside any trace gets a PRODUCER root so that its handlers on every
 * node form one trace; the gateway's HTTP request is a SERVER span (see lib/tracer.ts traceHttpRequest). Internal
 * `$` events are traced only inside an existing trace. `tracing: false` on an action or event skips its span.
 */
export function TracingMiddleware(opts: TracingMiddlewareOptions = {}): TracingMiddleware {
	const sampler = createSampler(opts.sampler ?? "parentbased_always_on", opts.ratio ?? 1);
	// Made when the broker starts (see starting()); handlers are only called after that.
	let tracer!: Tracer;
	let broker!: ServiceBroker;
	let lastFailureLog = 0;
	// Whether this middleware wraps handlers outermost, so that what calls a remote request's handler is Moleculer's
	// transit and not another middleware that may have entered an async context of its own (see created()).
	let outermost = false;

	const registers = opts.registry ? [opts.registry] : [];
	const recorded = new Counter({
		name: "lattice_tracing_spans_recorded_total",
		help: "Sampled spans handed to the exporter queue",
		registers
	});
	const exported = new Counter({
		name: "lattice_tracing_spans_exported_total",
		help: "Spans the exporter sent, by outcome (failure: given up after retries)",
		labelNames: ["outcome"],
		registers
	});
	const exportedOk = exported.labels("success");
	const exportedFailed = exported.labels("failure");
	// Both series exist from the start, so rates and alerts work before the first export.
	exportedOk.inc(0);
	exportedFailed.inc(0);

	/** Runs a handler with its span active: detached from the caller's async context when the request came from
	 * another node straight through Moleculer's transit, which is cheaper and loses nothing (runDetachedWithSpan). */
	function enter<A>(ctx: Context, span: Span, fn: (arg: A) => Promise<unknown>, arg: A): Promise<unknown> {
		return outermost && ctx.nodeID !== broker.nodeID ? runDetachedWithSpan(span, fn, arg) : runWithSpan(span, fn, arg);
	}

	function emitTraced(next: EmitFn, kind: string, eventName: string, payload: unknown, rawOpts: unknown): unknown {
		// The tracer is made when the broker starts: an event emitted before that (from a service's created()) is
		// not traced.
		if (!tracer) return next(eventName, payload, rawOpts);
		const o = normalizeEmitOptions(rawOpts);
		if (o.headers?.traceparent) return next(eventName, payload, o);
		const parent = o.parentCtx?.[SPAN] ?? activeSpan();
		if (parent) return next(eventName, payload, { ...o, headers: inject(parent, { ...o.headers }) });
		if (eventName.startsWith("$")) return next(eventName, payload, rawOpts);
		const producer = tracer.startSpan(`publish ${eventName}`, { kind: SpanKind.PRODUCER, parent: null });
		producer
			.setAttribute("messaging.system", "moleculer")
			.setAttribute("messaging.operation.type", "send")
			.setAttribute("messaging.destination.name", eventName)
			.setAttribute("moleculer.event.type", kind);
		const sent = next(eventName, payload, { ...o, headers: inject(producer, { ...o.headers }) });
		return producer.recording ? finish(producer, Promise.resolve(sent)) : sent;
	}

	async function spanExport(exporter: ExporterSpec): Promise<SpanExport> {
		const { createSpanExport } = await import("../lib/trace-exporter.ts");
		const serviceName = opts.serviceName ?? "lattice";
		return createSpanExport(
			exporter,
			{
				serviceName,
				serviceVersion: opts.serviceVersion,
				namespace: broker.namespace,
				nodeID: broker.nodeID,
				topology: latticeSettings(broker).topology,
				attributes: opts.resourceAttributes
			},
			opts.batch ?? {},
			{
				exported: n => exportedOk.inc(n),
				failed: (n, err) => {
					exportedFailed.inc(n);
					// One line a minute at most: a collector outage must not flood the logs.
					if (Date.now() - lastFailureLog > 60_000) {
						lastFailureLog = Date.now();
						broker.logger.warn(`Trace export failed, ${n} spans dropped: ${err?.message ?? "unknown error"}`);
					}
				}
			}
		);
	}

	const middleware: TracingMiddleware = {
		name: "LatticeTracing",

		created(b: ServiceBroker) {
			broker = b;
			// A handler wrapper registered after this one would call ours, perhaps inside an AsyncLocalStorage of its
			// own: then remote handlers run with run(), which keeps the caller's stores.
			const list = (b as unknown as { middlewares: { list: Array<Record<string, unknown>> } }).middlewares.list;
			const after = list.slice(list.indexOf(middleware) + 1);
			outermost = !after.some(m => typeof m.localAction === "function" || typeof m.localEvent === "function");
		},

		/**
		 * Makes the tracer before any service starts. The OpenTelemetry SDK and the exporters are imported here, and
		 * only when spans are exported: a node that only propagates trace context never loads them.
		 */
		async starting() {
			tracer = new Tracer({ sampler, export: opts.exporter ? await spanExport(opts.exporter) : null, onRecorded: () => recorded.inc() });
			registerTracer(broker, tracer);
		},

		started() {
			if (tracer.exporting) broker.logger.info(`Tracing: exporting sampled spans (${opts.exporter?.kind})`);
		},

		async stopped() {
			if (!tracer) return; // the broker failed to start before this middleware's turn
			const timeout = new Promise<void>(resolve => setTimeout(resolve, opts.shutdownTimeoutMs ?? 3000).unref());
			await Promise.race([tracer.shutdown(), timeout]);
		},

		localAction(handler: Handler, action: ActionSchema): Handler {
			if (action.tracing === false) return handler;
			const name = action.name ?? "";
			const method = (action as { rawName?: string }).rawName ?? name;
			const service = (action.service as Service | undefined)?.fullName ?? "";
			return function tracedAction(ctx: Context) {
				const adopted = (ctx.options as { [HTTP_SPAN]?: Span })[HTTP_SPAN];
				let span: Span;
				if (adopted) span = adopted;
				else {
					const { parent, remote } = parentOf(ctx);
					const fromOtherNode = ctx.nodeID !== broker.nodeID;
					span = tracer.startSpan(name, { kind: fromOtherNode ? SpanKind.SERVER : SpanKind.INTERNAL, parent, remote });
					if (span.recording) {
						span
							.setAttribute("rpc.system", "moleculer")
							.setAttribute("rpc.service", service)
							.setAttribute("rpc.method", method)
							.setAttribute("moleculer.caller_node_id", fromOtherNode ? (ctx.nodeID ?? undefined) : undefined)
							.setAttribute("moleculer.request_id", ctx.requestID ?? undefined)
							.setAttribute("moleculer.call_level", ctx.level);
					}
				}
				(ctx as Traced)[SPAN] = span;
				span.ctx = ctx;
				// Nothing to record at the end (unsampled, no exporter, or the gateway's span that ends with the
				// response): no extra promise hop before the reply goes out.
				if (adopted || !span.recording) return enter(ctx, span, handler, ctx);
				return enter(ctx, span, () => finish(span, handler(ctx), ctx), undefined);
			};
		},

		localEvent(handler: Handler, event: EventSchema): Handler {
			if ((event as { tracing?: unknown }).tracing === false) return handler;
			const svc = event.service as Service | undefined;
			// Moleculer defaults the group to the service name when it registers the handler, after this runs.
			const group = event.group ?? svc?.name;
			const service = svc?.fullName ?? "";
			return function tracedEvent(ctx: Context) {
				const eventName = ctx.eventName ?? event.name ?? "";
				const { parent, remote } = parentOf(ctx);
				if (!parent && eventName.startsWith("$")) return handler(ctx);
				const span = tracer.startSpan(`process ${eventName}`, { kind: SpanKind.CONSUMER, parent, remote });
				if (span.recording) {
					span
						.setAttribute("messaging.system", "moleculer")
						.setAttribute("messaging.operation.type", "process")
						.setAttribute("messaging.destination.name", eventName)
						.setAttribute("messaging.consumer.group.name", group)
						.setAttribute("moleculer.event.type", ctx.eventType ?? undefined)
						.setAttribute("moleculer.service", service)
						.setAttribute("moleculer.caller_node_id", ctx.nodeID ?? undefined)
						.setAttribute("moleculer.request_id", ctx.requestID ?? undefined);
				}
				(ctx as Traced)[SPAN] = span;
				span.ctx = ctx;
				if (!span.recording) return enter(ctx, span, handler, ctx);
				return enter(ctx, span, () => finish(span, handler(ctx), ctx), undefined);
			};
		},

		/**
		 * Calls to another node carry the caller's span in `traceparent` (local calls find it on the parent
		 * context). A call the caller's own cache answers never reaches the other node, so it is recorded here,
		 * as a CLIENT span marked as a cache hit.
		 */
		remoteAction(handler: Handler, action: ActionSchema): Handler {
			const name = action.name ?? "";
			const method = (action as { rawName?: string }).rawName ?? name;
			const service = (action.service as Service | undefined)?.fullName ?? "";
			return function tracedRemoteCall(ctx: Context) {
				const headers = ctx.headers as Record<string, unknown>;
				if (headers?.traceparent) return handler(ctx);
				const parent = (ctx.options as EmitOptions).parentCtx?.[SPAN] ?? activeSpan();
				if (!parent) return handler(ctx);
				ctx.headers = inject(parent, { ...headers }) as Context["headers"];
				if (!parent.sampled || !tracer.exporting) return handler(ctx);
				const startMs = nowMs();
				const p = handler(ctx);
				p.then(
					() => {
						if (!ctx.cachedResult) return;
						tracer
							.startSpan(name, { kind: SpanKind.CLIENT, parent, startMs })
							.setAttribute("rpc.system", "moleculer")
							.setAttribute("rpc.service", service)
							.setAttribute("rpc.method", method)
							.setAttribute("moleculer.cache_hit", true)
							.end();
					},
					() => undefined
				);
				return p;
			};
		},

		emit(next: EmitFn): EmitFn {
			return (eventName, payload, o) => emitTraced(next, "emit", eventName, payload, o);
		},

		broadcast(next: EmitFn): EmitFn {
			return (eventName, payload, o) => emitTraced(next, "broadcast", eventName, payload, o);
		},

		broadcastLocal(next: EmitFn): EmitFn {
			return (eventName, payload, o) => emitTraced(next, "broadcastLocal", eventName, payload, o);
		}
	};
	return middleware;
}
