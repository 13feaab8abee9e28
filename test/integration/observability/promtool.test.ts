import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import type { Context, ServiceSchema } from "moleculer";
import type { LatticeConfig } from "../../../moleculer.config.ts";
import { MetricsMixin } from "../../../mixins/metrics.mixin.ts";
import { createBroker, NATS_URL, uniqueNamespace } from "../../support/cluster.ts";

/**
 * The node's /metrics exposition, after real traffic (calls, errors, cache hits, events, NATS packets, a
 * service's own metrics), passes `promtool check metrics` (Debian package `prometheus`; .ci/run installs it) and
 * has every family the observability issue lists.
 */

const business = MetricsMixin({
	counters: { demo_orders_total: { help: "Orders placed", labels: ["channel"] } },
	histograms: { demo_checkout_seconds: { help: "Checkout time" } }
});

const Demo: ServiceSchema = {
	name: "demo",
	mixins: [business],
	actions: {
		ok: {
			public: true,
			cache: { keys: ["n"] },
			params: { n: "number" },
			async handler(ctx: Context<{ n: number }>) {
				business.of(this).demo_orders_total.inc({ channel: "web" });
				business.of(this).demo_checkout_seconds.startTimer()();
				await ctx.emit("demo.done", { n: ctx.params.n });
				return ctx.params.n;
			}
		},
		fail: {
			public: true,
			params: {},
			handler() {
				throw new Error("boom");
			}
		}
	},
	events: { "demo.done"() {} }
};

const FAMILIES = [
	"process_cpu_seconds_total",
	"process_resident_memory_bytes",
	"nodejs_heap_size_used_bytes",
	"nodejs_gc_duration_seconds",
	"nodejs_eventloop_lag_seconds",
	"lattice_node_info",
	"moleculer_request_total",
	"moleculer_request_duration_seconds",
	"moleculer_request_error_total",
	"moleculer_request_in_flight",
	"moleculer_event_emitted_total",
	"moleculer_event_received_total",
	"moleculer_event_duration_seconds",
	"moleculer_event_error_total",
	"moleculer_event_in_flight",
	"lattice_cache_lookups_total",
	"moleculer_circuit_breaker_transitions_total",
	"moleculer_transporter_packets_sent_total",
	"moleculer_transporter_packets_received_total",
	"moleculer_transporter_bytes_sent_total",
	"moleculer_transporter_bytes_received_total",
	"lattice_tracing_spans_recorded_total",
	"demo_orders_total",
	"demo_checkout_seconds"
];

test("the /metrics exposition passes promtool check metrics and has every listed family", async () => {
	const broker = await createBroker({ TRANSPORTER: NATS_URL, NAMESPACE: uniqueNamespace("promtool") }, [Demo]);
	try {
		for (let i = 0; i < 5; i++) await broker.call("demo.ok", { n: i % 2 });
		await assert.rejects(broker.call("demo.fail", {}));
		await broker.ping();
		const text = await (broker.options as LatticeConfig).metricsRegistry.metrics();

		const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
		assert.equal(check.error, undefined, "promtool runs (apt-get install prometheus)");
		assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}${check.stderr}`);
		assert.equal(`${check.stdout}${check.stderr}`.trim(), "");

		for (const family of FAMILIES) assert.match(text, new RegExp(`^# TYPE ${family} `, "m"), family);
		assert.doesNotMatch(text, /^nodejs_active_\w+_total/m);
		// Latency buckets from 0.1 ms to 10 s.
		assert.match(text, /^moleculer_request_duration_seconds_bucket\{le="0.0001",action="demo.ok"\} /m);
		assert.match(text, /^moleculer_request_duration_seconds_bucket\{le="10",action="demo.ok"\} /m);
		assert.match(text, /^lattice_cache_lookups_total\{outcome="l1"\} [1-9]/m);
		// No ids in label values (node_info carries the node's own id by design).
		const labelValues = [...text.matchAll(/^(?!lattice_node_info)\w+\{([^}]*)\}/gm)].flatMap(m => [...m[1]!.matchAll(/="([^"]*)"/g)].map(v => v[1]!));
		for (const v of labelValues) assert.doesNotMatch(v, /[0-9a-f]{16,}|[0-9a-f]{8}-[0-9a-f]{4}-/i, `label value '${v}' looks like an id`);
	} finally {
		await broker.stop();
	}
});
