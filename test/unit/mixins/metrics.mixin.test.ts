import { test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker, type ServiceSchema } from "moleculer";
import { Registry } from "prom-client";
import { MetricsMixin } from "../../../mixins/metrics.mixin.ts";
import { metricValue } from "../../support/cluster.ts";

const shop = MetricsMixin({
	counters: { shop_orders_total: { help: "Orders placed", labels: ["channel"] } },
	gauges: { shop_carts_open: { help: "Carts open now" } },
	histograms: { shop_payment_seconds: { help: "Payment provider latency", labels: ["provider"], buckets: [0.1, 1] } },
	maxSeries: 3
});

function shopService(version?: number): ServiceSchema {
	return {
		name: "shop",
		version,
		mixins: [shop],
		actions: {
			order: {
				params: { channel: "string" },
				handler(ctx) {
					const m = shop.of(this);
					m.shop_orders_total.inc({ channel: (ctx.params as { channel: string }).channel });
					m.shop_carts_open.inc();
					m.shop_payment_seconds.observe({ provider: "acme" }, 0.5);
					return m.shop_payment_seconds.startTimer({ provider: "other" })();
				}
			}
		}
	};
}

async function brokerWith(registry: Registry, services: ServiceSchema[], warnings: string[] = []) {
	const broker = new ServiceBroker({
		logger: { type: "Console", options: { level: "warn" } },
		metricsRegistry: registry
	} as ConstructorParameters<typeof ServiceBroker>[0]);
	broker.getLogger = (() => ({ warn: (m: string) => warnings.push(m), info() {}, debug() {}, error() {}, trace() {}, fatal() {} })) as never;
	for (const s of services) broker.createService(s);
	await broker.start();
	return broker;
}

test("a service's own counters, gauges and histograms land in the node's registry", async () => {
	const registry = new Registry();
	const broker = await brokerWith(registry, [shopService()]);
	try {
		await broker.call("shop.order", { channel: "web" });
		await broker.call("shop.order", { channel: "web" });
		await broker.call("shop.order", { channel: "app" });
		const text = await registry.metrics();
		assert.match(text, /^# TYPE shop_orders_total counter$/m);
		assert.equal(metricValue(text, "shop_orders_total", { channel: "web" }), 2);
		assert.equal(metricValue(text, "shop_orders_total", { channel: "app" }), 1);
		assert.equal(metricValue(text, "shop_carts_open"), 3);
		assert.equal(metricValue(text, "shop_payment_seconds_bucket", { provider: "acme", le: "1" }), 3);
		assert.equal(metricValue(text, "shop_payment_seconds_bucket", { provider: "acme", le: "0.1" }), 0);
		assert.equal(metricValue(text, "shop_payment_seconds_count", { provider: "other" }), 3);
	} finally {
		await broker.stop();
	}
});

test("label values beyond maxSeries fold into _other, with one warning", async () => {
	const registry = new Registry();
	const warnings: string[] = [];
	const broker = await brokerWith(registry, [shopService()], warnings);
	try {
		for (let i = 0; i < 10; i++) await broker.call("shop.order", { channel: `user-${i}` });
		const text = await registry.metrics();
		const series = text.split("\n").filter(l => l.startsWith("shop_orders_total{"));
		assert.equal(series.length, 4, series.join("\n"));
		assert.equal(metricValue(text, "shop_orders_total", { channel: "_other" }), 7);
		assert.equal(warnings.filter(w => w.includes("shop_orders_total")).length, 1);
	} finally {
		await broker.stop();
	}
});

test("two versions of a service share the series; a clashing type is refused", async () => {
	const registry = new Registry();
	const broker = await brokerWith(registry, [shopService(1), shopService(2)]);
	try {
		await broker.call("v1.shop.order", { channel: "web" });
		await broker.call("v2.shop.order", { channel: "web" });
		assert.equal(metricValue(await registry.metrics(), "shop_orders_total", { channel: "web" }), 2);
		const clash = MetricsMixin({ gauges: { shop_orders_total: { help: "not a counter" } } });
		assert.throws(() => broker.createService({ name: "clash", mixins: [clash] }), /already registered/);
	} finally {
		await broker.stop();
	}
});

test("without a node registry the service still works", async () => {
	const broker = new ServiceBroker({ logger: false });
	broker.createService(shopService());
	await broker.start();
	try {
		assert.equal(typeof (await broker.call("shop.order", { channel: "web" })), "number");
	} finally {
		await broker.stop();
	}
});
