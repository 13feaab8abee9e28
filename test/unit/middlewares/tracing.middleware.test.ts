import { AsyncLocalStorage } from "node:async_hooks";
import { test } from "node:test";
import assert from "node:assert/strict";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { ServiceBroker, type Context, type Middleware, type ServiceSchema } from "moleculer";
import { Registry } from "prom-client";
import { buildConfig } from "../../../moleculer.config.ts";
import { activeSpan, type ActiveSpan } from "../../../lib/trace-context.ts";
import { tracerOf } from "../../../lib/tracer.ts";
import { TracingMiddleware, type TracingMiddlewareOptions } from "../../../middlewares/tracing.middleware.ts";
import { metricValue } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";
import { sendToChannel } from "../../../lib/channels/channel.ts";
import { ChannelsMiddleware } from "../../../middlewares/channels.middleware.ts";

interface Setup {
	broker: ServiceBroker;
	exporter: InMemorySpanExporter;
	registry: Registry;
	/** Flushes the exporter queue and returns what was exported, oldest first. */
	spans(): Promise<ReadableSpan[]>;
}

async function setup(services: ServiceSchema[], opts: TracingMiddlewareOptions = {}): Promise<Setup> {
	const exporter = new InMemorySpanExporter();
	const registry = new Registry();
	const broker = new ServiceBroker({
		logger: false,
		nodeID: "unit",
		middlewares: [TracingMiddleware({ exporter: { kind: "custom", exporter }, registry, ...opts })]
	});
	for (const s of services) broker.createService(s);
	await broker.start();
	return {
		broker,
		exporter,
		registry,
		async spans() {
			await tracerOf(broker)!.flush();
			return exporter.getFinishedSpans();
		}
	};
}

function byName(spans: ReadableSpan[], name: string): ReadableSpan {
	const found = spans.filter(s => s.name === name);
	assert.equal(found.length, 1, `one '${name}' in ${JSON.stringify(spans.map(s => s.name))}`);
	return found[0]!;
}

const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;
const idOf = (s: ReadableSpan) => s.spanContext().spanId;

test("nested local calls, with or without ctx, form one tree of INTERNAL spans", async () => {
	const t = await setup([
		{
			name: "a",
			actions: {
				async go(ctx: Context) {
					await ctx.call("b.one");
					// No ctx: the parent comes from the async context.
					await this.broker.call("b.two");
					return "ok";
				}
			}
		},
		{ name: "b", actions: { one: () => 1, two: () => 2 } }
	]);
	try {
		await t.broker.call("a.go");
		const spans = await t.spans();
		assert.equal(spans.length, 3);
		const go = byName(spans, "a.go");
		const one = byName(spans, "b.one");
		const two = byName(spans, "b.two");
		assert.equal(parentOf(go), undefined);
		assert.equal(parentOf(one), idOf(go));
		assert.equal(parentOf(two), idOf(go));
		for (const s of spans) {
			assert.equal(s.spanContext().traceId, go.spanContext().traceId);
			assert.equal(s.kind, SpanKind.INTERNAL);
			assert.equal(s.resource.attributes["service.instance.id"], "unit", "the node is on the resource");
		}
		assert.equal(go.attributes["rpc.service"], "a");
		assert.equal(go.attributes["moleculer.call_level"], 1);
		assert.equal(one.attributes["moleculer.call_level"], 2);
		assert.equal(metricValue(await t.registry.metrics(), "lattice_tracing_spans_recorded_total"), 3);
		assert.equal(metricValue(await t.registry.metrics(), "lattice_tracing_spans_exported_total", { outcome: "success" }), 3);
	} finally {
		await t.broker.stop();
	}
});

test("events: emitted in a handler they are its children; emitted outside any trace they get a PRODUCER root", async () => {
	const t = await setup([
		{
			name: "orders",
			actions: {
				async place(ctx: Context) {
					await ctx.emit("order.placed", { n: 1 });
					await this.broker.broadcast("order.audited", { n: 1 });
				}
			}
		},
		{ name: "mail", events: { "order.placed"() {}, "order.audited"() {} } },
		{ name: "audit", events: { "order.audited"() {}, "tick.happened"() {}, "$node.connected"() {} } }
	]);
	try {
		await t.broker.call("orders.place");
		await t.broker.emit("tick.happened");
		await t.broker.broadcastLocal("$node.connected", { node: {} });
		const spans = await t.spans();
		const place = byName(spans, "orders.place");
		const placed = byName(spans, "process order.placed");
		const audited = spans.filter(s => s.name === "process order.audited");
		assert.equal(parentOf(placed), idOf(place));
		assert.equal(placed.kind, SpanKind.CONSUMER);
		assert.equal(placed.attributes["messaging.consumer.group.name"], "mail");
		assert.equal(audited.length, 2);
		for (const a of audited) assert.equal(parentOf(a), idOf(place));

		const publish = byName(spans, "publish tick.happened");
		const tick = byName(spans, "process tick.happened");
		assert.equal(publish.kind, SpanKind.PRODUCER);
		assert.equal(parentOf(publish), undefined);
		assert.equal(parentOf(tick), idOf(publish));
		assert.equal(tick.spanContext().traceId, publish.spanContext().traceId);

		assert.ok(!spans.some(s => s.name.includes("$node")), "internal events outside a trace are not traced");
	} finally {
		await t.broker.stop();
	}
});

test("handlers see their own span in the async context, also without an exporter", async () => {
	const seen: Array<ActiveSpan | undefined> = [];
	const exporter = new InMemorySpanExporter();
	const broker = new ServiceBroker({
		logger: false,
		middlewares: [TracingMiddleware({ exporter: null })],
		created(b) {
			b.createService({
				name: "a",
				actions: {
					async outer(ctx: Context) {
						seen.push(activeSpan());
						await ctx.call("a.inner");
						await new Promise(r => setTimeout(r, 1));
						seen.push(activeSpan());
					},
					inner() {
						seen.push(activeSpan());
					}
				}
			});
		}
	});
	await broker.start();
	try {
		await broker.call("a.outer");
		const [outer, inner, outerAgain] = seen;
		assert.ok(outer && inner);
		assert.equal(outerAgain, outer);
		assert.match(outer.traceId, /^[0-9a-f]{32}$/);
		assert.equal(inner.traceId, outer.traceId);
		assert.notEqual(inner.spanId, outer.spanId);
		assert.equal(outer.ctx?.action?.name, "a.outer");
		assert.equal(tracerOf(broker)?.exporting, false);
		assert.equal(exporter.getFinishedSpans().length, 0);
		assert.equal(activeSpan(), undefined);
	} finally {
		await broker.stop();
	}
});

test("a remote call's handler runs in its span, and keeps the async context of a middleware wrapping outside tracing", async () => {
	const tenant = new AsyncLocalStorage<string>();
	// Registered after tracing, so it wraps outside it: what it enters must reach the handler.
	const tenantMiddleware = {
		name: "Tenant",
		localAction: (next: (ctx: Context) => Promise<unknown>) => (ctx: Context) => tenant.run("acme", () => next(ctx))
	};
	const seen = new Map<string, [ActiveSpan | undefined, string | undefined]>();
	const service = (name: string): ServiceSchema => ({
		name,
		actions: {
			async where(ctx: Context) {
				await new Promise(r => setTimeout(r, 1));
				seen.set(name, [activeSpan(), tenant.getStore()]);
				return ctx.nodeID;
			}
		}
	});
	const node = (nodeID: string, middlewares: Middleware[], svc?: ServiceSchema) => {
		const b = new ServiceBroker({ logger: false, nodeID, namespace: "detached", transporter: "Fake", middlewares });
		if (svc) b.createService(svc);
		return b;
	};
	const plain = node("plain", [TracingMiddleware({ exporter: null })] as Middleware[], service("plain"));
	const wrapped = node("wrapped", [TracingMiddleware({ exporter: null }), tenantMiddleware] as Middleware[], service("wrapped"));
	const caller = node("caller", [TracingMiddleware({ exporter: null })] as Middleware[]);
	await Promise.all([plain.start(), wrapped.start(), caller.start()]);
	try {
		await caller.waitForServices(["plain", "wrapped"]);
		assert.equal(await caller.call("plain.where"), "caller");
		assert.equal(await caller.call("wrapped.where"), "caller");
		const [plainSpan, plainTenant] = seen.get("plain")!;
		assert.equal(plainSpan?.ctx?.action?.name, "plain.where");
		assert.equal(plainTenant, undefined);
		const [wrappedSpan, wrappedTenant] = seen.get("wrapped")!;
		assert.equal(wrappedSpan?.ctx?.action?.name, "wrapped.where");
		assert.equal(wrappedTenant, "acme");
	} finally {
		await Promise.all([plain.stop(), wrapped.stop(), caller.stop()]);
	}
});

test("`tracing: false` skips an action's span: its children attach to the caller's", async () => {
	const t = await setup([
		{
			name: "a",
			actions: {
				outer: (ctx: Context) => ctx.call("a.quiet"),
				quiet: { tracing: false, handler: (ctx: Context) => ctx.call("a.leaf") },
				leaf: () => 1
			}
		}
	]);
	try {
		await t.broker.call("a.outer");
		const spans = await t.spans();
		assert.deepEqual(spans.map(s => s.name).sort(), ["a.leaf", "a.outer"]);
		assert.equal(parentOf(byName(spans, "a.leaf")), idOf(byName(spans, "a.outer")));
	} finally {
		await t.broker.stop();
	}
});

test("ratio 0 exports nothing for new traces, but a sampled caller's trace is still recorded", async () => {
	const t = await setup([{ name: "a", actions: { go: () => 1 } }], { sampler: "parentbased_traceidratio", ratio: 0 });
	try {
		for (let i = 0; i < 20; i++) await t.broker.call("a.go");
		assert.equal((await t.spans()).length, 0);
		await t.broker.call("a.go", {}, { headers: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" } });
		const [span] = await t.spans();
		assert.equal(span?.spanContext().traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
		assert.equal(parentOf(span!), "00f067aa0ba902b7");
		assert.equal(span!.parentSpanContext?.isRemote, true);
	} finally {
		await t.broker.stop();
	}
});

test("a failing action is exported with status ERROR and the error's type", async () => {
	const t = await setup([
		{
			name: "a",
			actions: {
				boom() {
					throw new Error("nope");
				}
			}
		}
	]);
	try {
		await assert.rejects(t.broker.call("a.boom"), /nope/);
		const [span] = await t.spans();
		assert.equal(span?.status.code, 2);
		assert.equal(span?.status.message, "nope");
		assert.equal(span?.attributes["error.type"], "Error");
	} finally {
		await t.broker.stop();
	}
});

test("a channel message continues the sender's trace in its consumer, retries included", async () => {
	const exporter = new InMemorySpanExporter();
	let attempts = 0;
	const broker = new ServiceBroker({
		logger: false,
		middlewares: [TracingMiddleware({ exporter: { kind: "custom", exporter } }), ChannelsMiddleware({ nats: null, receipts: null }) as unknown as Middleware]
	});
	broker.createService({
		name: "orders",
		actions: { place: (ctx: Context) => sendToChannel(ctx.broker, "orders.placed", { n: 1 }, { id: "o-1" }) }
	});
	broker.createService({
		name: "mail",
		channels: {
			"orders.placed": {
				backoff: 10,
				async handler(ctx: Context) {
					if (++attempts === 1) throw new Error("mail server busy");
					await ctx.call("mail.render");
				}
			}
		},
		actions: { render: () => "hello" }
	} as ServiceSchema);
	await broker.start();
	try {
		await broker.call("orders.place");
		await waitFor(() => attempts === 2, 5000, "the redelivery");
		await tracerOf(broker)!.flush();
		const spans = await waitFor(() => {
			const s = exporter.getFinishedSpans();
			return s.some(x => x.name === "mail.render") && s;
		}, 5000, "the consumer's spans");
		const place = byName(spans, "orders.place");
		const deliveries = spans.filter(s => s.name === "process orders.placed");
		assert.equal(deliveries.length, 2);
		for (const d of deliveries) {
			assert.equal(parentOf(d), idOf(place));
			assert.equal(d.kind, SpanKind.CONSUMER);
			assert.equal(d.attributes["messaging.message.id"], "o-1");
		}
		const [first, second] = deliveries.sort((a, b) => Number(a.attributes["lattice.channel.delivery"]) - Number(b.attributes["lattice.channel.delivery"]));
		assert.equal(first!.status.code, 2, "the failed delivery is an error");
		assert.equal(parentOf(byName(spans, "mail.render")), idOf(second!));
	} finally {
		await broker.stop();
	}
});

test("config: OTEL_* variables are validated at startup", () => {
	assert.throws(() => buildConfig({ OTEL_TRACES_SAMPLER: "jaeger_remote" }), /OTEL_TRACES_SAMPLER must be one of/);
	assert.throws(() => buildConfig({ OTEL_TRACES_SAMPLER_ARG: "1.5" }), /OTEL_TRACES_SAMPLER_ARG/);
	assert.throws(() => buildConfig({ OTEL_TRACES_SAMPLER_ARG: "half" }), /OTEL_TRACES_SAMPLER_ARG/);
	assert.throws(() => buildConfig({ OTEL_TRACES_EXPORTER: "jaeger" }), /OTEL_TRACES_EXPORTER must be one of/);
	assert.throws(() => buildConfig({ OTEL_RESOURCE_ATTRIBUTES: "team" }), /OTEL_RESOURCE_ATTRIBUTES/);
	assert.throws(() => buildConfig({ OTEL_BSP_MAX_QUEUE_SIZE: "0" }), /OTEL_BSP_MAX_QUEUE_SIZE/);
	assert.throws(() => buildConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }), /OTEL_EXPORTER_OTLP_PROTOCOL must be one of/);
	assert.throws(() => buildConfig({ OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/xml" }), /OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be one of/);
	const names = (env: Record<string, string>) =>
		(buildConfig(env).middlewares ?? []).map(m => (typeof m === "string" ? m : (m as { name?: string }).name));
	const list = names({});
	// Hooks of later middlewares wrap earlier ones: tracing's span covers metrics and every Moleculer internal.
	assert.ok(list.indexOf("LatticeTracing") > list.indexOf("LatticeMetrics"));
	assert.ok(list.indexOf("LatticeTracing") > list.indexOf("Cacher"));
});
