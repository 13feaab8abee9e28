import { test } from "node:test";
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { FastCounter, FastGauge, FastHistogram } from "../../../lib/fast-metrics.ts";

test("fast metrics render like prom-client's: counters, gauges and cumulative histogram buckets", async () => {
	const registry = new Registry();
	const c = new FastCounter({ name: "t_calls_total", help: "Calls", labelNames: ["action"], registers: [registry] });
	const g = new FastGauge({ name: "t_in_flight", help: "Running", registers: [registry] });
	const h = new FastHistogram({ name: "t_seconds", help: "Time", labelNames: ["action"], buckets: [1, 0.1], registers: [registry] });
	const a = c.labels("a");
	a.inc();
	a.inc(2);
	assert.equal(c.labels("a"), a, "the same child for the same labels");
	g.labels().inc();
	g.labels().inc();
	g.labels().dec();
	const ha = h.labels("a");
	for (const v of [0.05, 0.1, 0.5, 7]) ha.observe(v);
	assert.throws(() => c.labels("a", "b"), /expected 1 label values/);

	assert.equal(
		await registry.metrics(),
		[
			"# HELP t_calls_total Calls",
			"# TYPE t_calls_total counter",
			't_calls_total{action="a"} 3',
			"",
			"# HELP t_in_flight Running",
			"# TYPE t_in_flight gauge",
			"t_in_flight 1",
			"",
			"# HELP t_seconds Time",
			"# TYPE t_seconds histogram",
			't_seconds_bucket{le="0.1",action="a"} 2',
			't_seconds_bucket{le="1",action="a"} 3',
			't_seconds_bucket{le="+Inf",action="a"} 4',
			't_seconds_sum{action="a"} 7.65',
			't_seconds_count{action="a"} 4',
			""
		].join("\n")
	);
	registry.resetMetrics();
	assert.equal(await registry.getSingleMetricAsString("t_calls_total"), "# HELP t_calls_total Calls\n# TYPE t_calls_total counter");
});
