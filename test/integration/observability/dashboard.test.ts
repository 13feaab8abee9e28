import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Context, ServiceSchema } from "moleculer";
import type { LatticeConfig } from "../../../moleculer.config.ts";
import { createBroker, NATS_URL, uniqueNamespace } from "../../support/cluster.ts";
import { ROOT, waitFor } from "../../support/processes.ts";

/**
 * The Grafana dashboard (k8s/dashboards/lattice.json) only shows what nodes really export: every query is valid
 * PromQL (promtool), every metric it reads is in a real node's /metrics, every label it groups by is on that
 * metric or added by the `lattice` scrape job; and it renders as the ConfigMap Grafana's sidecar loads.
 */

interface Panel {
	title?: string;
	type: string;
	targets?: Array<{ expr: string }>;
}

const dashboard = JSON.parse(readFileSync(path.join(ROOT, "k8s/dashboards/lattice.json"), "utf8")) as {
	uid: string;
	panels: Panel[];
	templating: { list: Array<{ name: string; definition?: string }> };
};
/** Labels the scrape job adds (k8s/base/prometheus-scrape.yaml) or Prometheus itself does. */
const SCRAPE_LABELS = new Set(["namespace", "pod", "role", "site", "node", "job", "instance", "le"]);
const PROMETHEUS_METRICS = new Set(["up"]);

const queries = dashboard.panels.flatMap(p => (p.targets ?? []).map(t => ({ panel: p.title ?? p.type, expr: t.expr })));

/** The query as Prometheus would get it from Grafana, with the dashboard's variables filled in. */
function concrete(expr: string): string {
	return expr.replaceAll("$__rate_interval", "1m").replace(/\$(namespace|role|pod)\b/g, ".*");
}

function metricsIn(expr: string): string[] {
	return [...expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\{/g)].map(m => m[1]!);
}

function family(metric: string, exposition: string): string {
	for (const suffix of ["_bucket", "_sum", "_count"]) {
		const base = metric.slice(0, -suffix.length);
		if (metric.endsWith(suffix) && new RegExp(`^# TYPE ${base} histogram$`, "m").test(exposition)) return base;
	}
	return metric;
}

test("every dashboard query is valid PromQL", () => {
	assert.ok(queries.length > 25, `${queries.length} queries`);
	const dir = mkdtempSync(path.join(os.tmpdir(), "lattice-dashboard-"));
	try {
		const rules = [
			"groups:",
			"  - name: dashboard",
			"    rules:",
			...queries.flatMap((q, i) => [`      - record: dashboard:query_${i}`, `        expr: ${JSON.stringify(concrete(q.expr))}`])
		].join("\n");
		const file = path.join(dir, "rules.yaml");
		writeFileSync(file, rules + "\n");
		const check = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
		assert.equal(check.error, undefined, "promtool runs (apt-get install prometheus)");
		assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
	} finally {
		rmSync(dir, { recursive: true, force: true });
	}
});

const Demo: ServiceSchema = {
	name: "demo",
	actions: {
		go: {
			public: true,
			cache: true,
			async handler(ctx: Context) {
				await ctx.emit("demo.done", {});
				return 1;
			}
		},
		fail: {
			public: true,
			handler() {
				throw new Error("boom");
			}
		}
	},
	events: {
		"demo.done"() {
			throw new Error("handler failed");
		}
	}
};

test("every metric and grouping label on the dashboard exists in a node's exposition", async () => {
	const broker = await createBroker({ TRANSPORTER: NATS_URL, NAMESPACE: uniqueNamespace("dashboard"), LOGLEVEL: "fatal" }, [Demo]);
	try {
		await broker.call("demo.go");
		await broker.call("demo.go");
		// Enough server faults to open demo.fail's breaker (20 calls, half failing), so its transitions exist.
		for (let i = 0; i < 25; i++) await assert.rejects(broker.call("demo.fail"));
		await broker.ping();
		const registry = (broker.options as LatticeConfig).metricsRegistry;
		// GC series appear after the first collection: make garbage until one is observed.
		const exposition = await waitFor(async () => {
			for (let i = 0; i < 200; i++) Array.from({ length: 10_000 }, (_, j) => ({ j }));
			const text = await registry.metrics();
			return /^nodejs_gc_duration_seconds_sum\{/m.test(text) && text;
		}, 10_000, "a garbage collection");
		for (const q of queries) {
			const metrics = metricsIn(q.expr).filter(m => !PROMETHEUS_METRICS.has(m));
			assert.ok(metrics.length > 0 || /\bup\{/.test(q.expr), `${q.panel}: reads a metric`);
			const grouping = [...q.expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap(m => m[1]!.split(",").map(s => s.trim()));
			for (const m of metrics) {
				const fam = family(m, exposition);
				assert.match(exposition, new RegExp(`^# TYPE ${fam} `, "m"), `${q.panel}: ${m} is exported`);
				const series = exposition.split("\n").filter(l => l.startsWith(`${m}{`) || l.startsWith(`${m} `));
				const labels = new Set(series.flatMap(l => [...l.matchAll(/(\w+)="/g)].map(x => x[1]!)));
				for (const g of grouping) {
					if (!SCRAPE_LABELS.has(g)) assert.ok(labels.has(g), `${q.panel}: ${m} has no '${g}' label (series: ${series.slice(0, 3).join(" | ")})`);
				}
			}
		}
		for (const v of dashboard.templating.list.filter(v => v.definition)) {
			for (const m of metricsIn(v.definition!.replace(/label_values\(([a-z_]+),/, "$1{},"))) {
				assert.match(exposition, new RegExp(`^# TYPE ${m} `, "m"), `variable ${v.name}: ${m}`);
			}
		}
	} finally {
		await broker.stop();
	}
});

test("the dashboard renders as a ConfigMap for Grafana's sidecar", () => {
	const out = spawnSync("kubectl", ["kustomize", path.join(ROOT, "k8s/dashboards")], { encoding: "utf8" });
	assert.equal(out.error, undefined, "kubectl runs");
	assert.equal(out.status, 0, out.stderr);
	assert.match(out.stdout, /^kind: ConfigMap$/m);
	assert.match(out.stdout, /grafana_dashboard: "1"/);
	assert.match(out.stdout, /"uid": "lattice-overview"/);
});
