import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "nats";
import { channelNames } from "../../../lib/channels/jetstream.adapter.ts";
import { metricValue, NATS_URL, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";
import { OTLP_KIND, OTLP_STATUS_ERROR, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "./otlp-receiver.ts";

/**
 * The tracing proof: three Lattice nodes as separate processes over real NATS (gateway, `orders`, `inventory`),
 * each exporting over OTLP/HTTP to a receiver in this test that decodes what the exporter actually sends. One
 * gateway request must come back as one tree across the three nodes, whatever the hops: call, balanced event,
 * broadcast event, reliable channel, cache hit, failure.
 */

const FIXTURES = "test/support/fixtures";
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;
const namespace = uniqueNamespace("tracing");
const suffix = namespace.slice(-6);
const ids = { gateway: `gw-${suffix}`, orders: `orders-${suffix}`, inventory: `inventory-${suffix}` };

function one(spans: ReceivedSpan[], name: string, nodeID?: string): ReceivedSpan {
	const found = spans.filter(s => s.name === name && (!nodeID || s.resource["service.instance.id"] === nodeID));
	assert.equal(found.length, 1, `exactly one '${name}' span${nodeID ? ` on ${nodeID}` : ""} in ${JSON.stringify(spans.map(s => s.name))}`);
	return found[0]!;
}

function parse(header: string | null): { traceId: string; spanId: string; sampled: boolean } {
	const m = TRACEPARENT.exec(header ?? "");
	assert.ok(m, `a W3C traceparent in the response, got '${header}'`);
	return { traceId: m[1]!, spanId: m[2]!, sampled: m[3] === "01" };
}

describe("W3C trace context across three nodes over NATS, exported over OTLP/HTTP", () => {
	let receiver: OtlpReceiver;
	let gateway: LatticeNode;
	let orders: LatticeNode;
	let inventory: LatticeNode;

	const get = (path: string, headers: Record<string, string> = {}) => fetch(`${gateway.gatewayUrl}${path}`, { headers });

	before(async () => {
		receiver = await startOtlpReceiver();
		const env = {
			TRANSPORTER: NATS_URL,
			NAMESPACE: namespace,
			OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
			OTEL_BSP_SCHEDULE_DELAY: "100",
			OTEL_SERVICE_NAME: "lattice-tracing-test",
			OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=test",
			LATTICE_REGION: "eu-west",
			LATTICE_ZONE: "eu-west-1b",
			LATTICE_SITE: "lab",
			LATTICE_RATE_LIMIT: "0",
			LOGLEVEL: "info"
		};
		[gateway, orders, inventory] = await Promise.all([
			startNode({ nodeID: ids.gateway, services: `${FIXTURES}/trace-gateway.service.ts`, gateway: true, env }),
			startNode({ nodeID: ids.orders, services: `${FIXTURES}/trace-orders.service.ts`, env }),
			// OTLP's other encoding on one node: both must decode into the same tree.
			startNode({ nodeID: ids.inventory, services: `${FIXTURES}/trace-inventory.service.ts`, env: { ...env, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json" } })
		]);
		// Discovery is asynchronous: wait until a request goes all the way through.
		await waitFor(async () => (await get("/trace/place")).status === 200, 20_000, "the gateway to reach orders and inventory");
	});

	after(async () => {
		await Promise.allSettled([gateway, orders, inventory].filter(Boolean).map(n => n.stop()));
		await receiver?.stop();
		// The channel's JetStream stream outlives the nodes: leave nothing in the shared NATS.
		const nc = await connect({ servers: NATS_URL });
		const jsm = await nc.jetstreamManager();
		for await (const s of jsm.streams.list()) {
			if (s.config.name.startsWith(channelNames(namespace).streamPrefix)) await jsm.streams.delete(s.config.name);
		}
		await nc.close();
	});

	test("one request is one tree: HTTP → call → call, balanced event and broadcast on two nodes", async () => {
		const res = await get("/trace/place");
		assert.equal(res.status, 200);
		const tp = parse(res.headers.get("traceparent"));
		assert.equal(tp.sampled, true);

		const spans = await receiver.waitForTrace(tp.traceId, 6);
		const http = one(spans, "GET /trace/place");
		const place = one(spans, "orders.place");
		const reserve = one(spans, "inventory.reserve");
		const placed = one(spans, "process order.placed");
		const auditedOnGateway = one(spans, "process order.audited", ids.gateway);
		const auditedOnInventory = one(spans, "process order.audited", ids.inventory);
		assert.equal(spans.length, 6, `no stray spans: ${JSON.stringify(spans.map(s => s.name))}`);

		// The root is the gateway's HTTP span, and the response's traceparent names it.
		assert.equal(http.parentSpanId, undefined);
		assert.equal(http.spanId, tp.spanId);
		assert.equal(http.kind, OTLP_KIND.SERVER);
		assert.equal(http.resource["service.instance.id"], ids.gateway);
		assert.equal(http.attributes["http.request.method"], "GET");
		assert.equal(http.attributes["http.route"], "/trace/place");
		assert.equal(http.attributes["http.response.status_code"], 200);

		// Parent links, one hop at a time, each recorded by the node that did the work.
		assert.equal(place.parentSpanId, http.spanId);
		assert.equal(place.resource["service.instance.id"], ids.orders);
		assert.equal(place.kind, OTLP_KIND.SERVER);
		assert.equal(place.attributes["rpc.system"], "moleculer");
		assert.equal(place.attributes["rpc.service"], "orders");
		assert.equal(place.attributes["rpc.method"], "place");
		assert.equal(place.attributes["moleculer.caller_node_id"], ids.gateway);
		assert.match(String(place.attributes["moleculer.request_id"]), /^[\w.:-]+$/);

		assert.equal(reserve.parentSpanId, place.spanId);
		assert.equal(reserve.resource["service.instance.id"], ids.inventory);
		assert.equal(reserve.attributes["moleculer.caller_node_id"], ids.orders);

		for (const e of [placed, auditedOnGateway, auditedOnInventory]) {
			assert.equal(e.parentSpanId, place.spanId, `${e.name} on ${String(e.resource["service.instance.id"])}`);
			assert.equal(e.kind, OTLP_KIND.CONSUMER);
		}
		assert.equal(placed.resource["service.instance.id"], ids.inventory);
		assert.equal(placed.attributes["moleculer.event.type"], "emit");
		assert.equal(placed.attributes["messaging.consumer.group.name"], "inventory");
		assert.equal(auditedOnGateway.attributes["moleculer.event.type"], "broadcast");

		for (const s of spans) {
			assert.match(s.spanId, /^[0-9a-f]{16}$/);
			assert.equal(s.resource["service.name"], "lattice-tracing-test");
			assert.equal(s.resource["cloud.region"], "eu-west");
			assert.equal(s.resource["cloud.availability_zone"], "eu-west-1b");
			assert.equal(s.resource["lattice.site"], "lab");
			assert.equal(s.resource["service.namespace"], namespace);
			assert.equal(s.resource["deployment.environment.name"], "test");
			assert.match(String(s.resource["service.version"]), /^\d+\.\d+\.\d+/);
			assert.notEqual(s.status.code, OTLP_STATUS_ERROR, s.name);
			assert.ok(s.endNs >= s.startNs, `${s.name} ends after it starts`);
		}
		// Children start within their parent's time span, across processes on one clock.
		assert.ok(reserve.startNs >= place.startNs && reserve.endNs <= place.endNs);
		// Protobuf by default (gateway, orders), JSON where asked for (inventory).
		assert.ok(receiver.requests.some(t => /application\/x-protobuf/.test(t)), receiver.requests.join());
		assert.ok(receiver.requests.some(t => /application\/json/.test(t)), receiver.requests.join());
	});

	test("an incoming traceparent and tracestate are continued; an unsampled one is propagated but not recorded", async () => {
		const given = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" };
		const res = await get("/trace/place", {
			traceparent: `00-${given.traceId}-${given.spanId}-01`,
			tracestate: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
		});
		assert.equal(res.status, 200);
		const tp = parse(res.headers.get("traceparent"));
		assert.equal(tp.traceId, given.traceId);
		assert.notEqual(tp.spanId, given.spanId);

		const spans = await receiver.waitForTrace(given.traceId, 6);
		const http = one(spans, "GET /trace/place");
		assert.equal(http.parentSpanId, given.spanId);
		for (const s of spans) assert.equal(s.traceState, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", s.name);
		assert.equal(one(spans, "inventory.reserve").parentSpanId, one(spans, "orders.place").spanId);

		const unsampled = "0af7651916cd43dd8448eb211c80319c";
		const quiet = await get("/trace/place", { traceparent: `00-${unsampled}-b7ad6b7169203331-00` });
		assert.equal(quiet.status, 200);
		const qtp = parse(quiet.headers.get("traceparent"));
		assert.equal(qtp.traceId, unsampled);
		assert.equal(qtp.sampled, false);
		// A sampled request after it is the barrier: once its spans are in, the unsampled ones would be too.
		const barrier = parse((await get("/trace/place")).headers.get("traceparent"));
		await receiver.waitForTrace(barrier.traceId, 6);
		assert.deepEqual(receiver.trace(unsampled), []);

		const garbage = await get("/trace/place", { traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01" });
		const fresh = parse(garbage.headers.get("traceparent"));
		assert.notEqual(fresh.traceId, "00000000000000000000000000000000", "an invalid traceparent starts a new trace");
	});

	test("a failure marks the failing span and its ancestors as errors", async () => {
		const res = await get("/trace/fail");
		assert.equal(res.status, 500);
		const tp = parse(res.headers.get("traceparent"));
		const spans = await receiver.waitForTrace(tp.traceId, 3);
		const http = one(spans, "GET /trace/fail");
		const fail = one(spans, "orders.fail");
		const explode = one(spans, "inventory.explode");

		assert.equal(explode.parentSpanId, fail.spanId);
		assert.equal(fail.parentSpanId, http.spanId);
		assert.equal(explode.status.code, OTLP_STATUS_ERROR);
		assert.equal(explode.status.message, "The stock database is on fire");
		assert.equal(explode.attributes["error.type"], "FIXTURE_EXPLODED");
		const exception = explode.events.find(e => e.name === "exception");
		assert.equal(exception?.attributes["exception.type"], "FIXTURE_EXPLODED");
		assert.equal(fail.status.code, OTLP_STATUS_ERROR);
		assert.equal(http.status.code, OTLP_STATUS_ERROR);
		assert.equal(http.attributes["http.response.status_code"], 500);
	});

	test("a cache hit is still a span in the tree, marked as such, recorded where the cache answered", async () => {
		const res = await get("/trace/stock");
		assert.equal(res.status, 200);
		const tp = parse(res.headers.get("traceparent"));
		const spans = await receiver.waitForTrace(tp.traceId, 4);
		const stock = one(spans, "orders.stock");
		const reads = spans.filter(s => s.name === "inventory.stock");
		assert.equal(reads.length, 2);
		for (const r of reads) assert.equal(r.parentSpanId, stock.spanId);
		const [first, second] = reads.sort((a, b) => (a.startNs < b.startNs ? -1 : 1));
		assert.equal(first!.attributes["moleculer.cache_hit"], undefined, "the first read is a miss");
		assert.equal(first!.kind, OTLP_KIND.SERVER);
		assert.equal(first!.resource["service.instance.id"], ids.inventory);
		// Lattice's two-level cacher answers the repeat from the caller's L1: the call never leaves the orders node.
		assert.equal(second!.attributes["moleculer.cache_hit"], true);
		assert.equal(second!.kind, OTLP_KIND.CLIENT);
		assert.equal(second!.resource["service.instance.id"], ids.orders);
		assert.notEqual(first!.spanId, second!.spanId);
	});

	test("a reliable channel message continues the trace on the node that consumes it", async () => {
		const res = await get("/trace/ship");
		assert.equal(res.status, 200);
		const tp = parse(res.headers.get("traceparent"));
		const spans = await receiver.waitForTrace(tp.traceId, 3);
		const ship = one(spans, "orders.ship");
		const shipped = one(spans, "process trace.shipments");
		assert.equal(ship.parentSpanId, one(spans, "GET /trace/ship").spanId);
		assert.equal(shipped.parentSpanId, ship.spanId);
		assert.equal(shipped.kind, OTLP_KIND.CONSUMER);
		assert.equal(shipped.resource["service.instance.id"], ids.inventory);
		assert.equal(shipped.attributes["messaging.consumer.group.name"], "inventory");
	});

	test("log lines written inside handlers carry the trace, span, request, node, service and action", async () => {
		const res = await get("/trace/place");
		const tp = parse(res.headers.get("traceparent"));
		const spans = await receiver.waitForTrace(tp.traceId, 6);
		const place = one(spans, "orders.place");
		const placed = one(spans, "process order.placed");

		const line = (node: LatticeNode, msg: string) =>
			waitFor(
				() =>
					node.output
						.join("")
						.split("\n")
						.filter(l => l.startsWith("{"))
						.map(l => JSON.parse(l) as Record<string, unknown>)
						.find(l => l.msg === msg && l.traceId === tp.traceId),
				5000,
				`'${msg}' logged by ${node.nodeID}`
			);
		const a = await line(orders, "placing order");
		assert.equal(a.spanId, place.spanId);
		assert.equal(a.requestId, place.attributes["moleculer.request_id"]);
		assert.equal(a.nodeID, ids.orders);
		assert.equal(a.service, "orders");
		assert.equal(a.action, "orders.place");

		const b = await line(inventory, "reserving for the placed order");
		assert.equal(b.spanId, placed.spanId);
		assert.equal(b.nodeID, ids.inventory);
		assert.equal(b.service, "inventory");
		assert.equal(b.event, "order.placed");
	});

	test("with the collector down requests still succeed, and the exporter retries once it is back", async () => {
		await receiver.stop();
		const traces: string[] = [];
		for (let i = 0; i < 20; i++) {
			const res = await get("/trace/place");
			assert.equal(res.status, 200, "a request never fails because of tracing");
			traces.push(parse(res.headers.get("traceparent")).traceId);
		}
		// Well inside the OTLP exporter's backoff (first retry after ~1 s, within a 10 s budget).
		await new Promise(r => setTimeout(r, 300));
		await receiver.start();
		// The first trace went out in a batch that met a refused connection: it arrives only if that batch is retried.
		await receiver.waitForTrace(traces[0]!, 6, 20_000);
		await receiver.waitForTrace(traces.at(-1)!, 6, 20_000);
		for (const node of [gateway, orders, inventory]) {
			const exported = metricValue(await node.metrics(), "lattice_tracing_spans_exported_total", { outcome: "success" });
			assert.ok(exported > 0, `${node.nodeID} counts exported spans`);
		}
	});
});
