import { test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker, type Context } from "moleculer";
import { pinoLoggerConfig } from "../../../lib/logger.ts";
import { activeSpan } from "../../../lib/trace-context.ts";
import { TracingMiddleware } from "../../../middlewares/tracing.middleware.ts";

type Line = Record<string, unknown>;

/** A broker logging JSON lines into an array, with Lattice tracing (ids only, no exporter). */
function broker(level = "info") {
	const lines: Line[] = [];
	const destination = { write: (s: string) => void lines.push(JSON.parse(s) as Line) };
	const b = new ServiceBroker({
		nodeID: "log-node",
		logger: pinoLoggerConfig({ level, destination }),
		middlewares: [TracingMiddleware({})]
	});
	return { b, lines };
}

test("lines logged inside action and event handlers carry trace, span, request, node, service and action", async () => {
	const { b, lines } = broker();
	const spans: Record<string, { traceId: string; spanId: string }> = {};
	const current = () => {
		const s = activeSpan()!;
		return { traceId: s.traceId, spanId: s.spanId };
	};
	b.createService({
		name: "orders",
		version: 2,
		actions: {
			async place(ctx: Context) {
				spans.place = current();
				this.logger.info("placing", { sku: "beans" });
				await ctx.emit("order.placed", {});
				// Any logger: the broker's own lines written during the call are correlated as well.
				this.broker.logger.warn("broker line");
				this.logger.info("overridden", { action: "mine" });
			}
		}
	});
	b.createService({
		name: "mail",
		events: {
			"order.placed"(this: { logger: { info(m: string): void } }) {
				spans.placed = current();
				this.logger.info("mailing");
			}
		}
	});
	await b.start();
	try {
		await b.call("v2.orders.place", {}, { requestID: "req-42" });
		b.logger.info("outside");
		const find = (msg: string) => lines.find(l => l.msg === msg) ?? assert.fail(`no '${msg}' line in ${JSON.stringify(lines)}`);

		const placing = find("placing");
		assert.equal(placing.traceId, spans.place!.traceId);
		assert.match(String(placing.traceId), /^[0-9a-f]{32}$/);
		assert.equal(placing.spanId, spans.place!.spanId);
		assert.match(String(placing.spanId), /^[0-9a-f]{16}$/);
		assert.equal(placing.requestId, "req-42");
		assert.equal(placing.nodeID, "log-node");
		assert.equal(placing.service, "v2.orders");
		assert.equal(placing.action, "v2.orders.place");
		assert.equal(placing.sku, "beans", "the caller's own fields are kept");
		assert.equal(placing.level, "info");

		const mailing = find("mailing");
		assert.equal(mailing.traceId, spans.place!.traceId);
		assert.equal(mailing.spanId, spans.placed!.spanId);
		assert.notEqual(mailing.spanId, placing.spanId);
		assert.equal(mailing.service, "mail");
		assert.equal(mailing.event, "order.placed");
		assert.equal(mailing.requestId, "req-42");

		const brokerLine = find("broker line");
		assert.equal(brokerLine.spanId, spans.place!.spanId);
		assert.equal(brokerLine.action, "v2.orders.place");

		assert.equal(find("overridden").action, "mine");

		const outside = find("outside");
		assert.equal(outside.traceId, undefined);
		assert.equal(outside.spanId, undefined);
	} finally {
		await b.stop();
	}
});

test("levels below the configured one are not written", async () => {
	const { b, lines } = broker("warn");
	await b.start();
	try {
		b.logger.info("quiet");
		b.logger.debug("quieter");
		b.logger.error("loud", new Error("boom"));
		assert.deepEqual(
			lines.map(l => l.msg),
			["loud"]
		);
		assert.equal((lines[0]!.err as { message: string }).message, "boom");
	} finally {
		await b.stop();
	}
});
