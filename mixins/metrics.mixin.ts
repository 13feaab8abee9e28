import { Counter, Gauge, Histogram, Registry, type Metric } from "prom-client";
import type { Service, ServiceSchema } from "moleculer";
import { DEFAULT_BUCKETS } from "../lib/metric-buckets.ts";

/** One metric a service declares. Label names are fixed; their values must come from a small set (no ids). */
export interface MetricSpec {
	help: string;
	labels?: readonly string[];
}

export interface HistogramSpec extends MetricSpec {
	/** Upper bounds; default the 0.1 ms … 10 s latency buckets the node's own histograms use. */
	buckets?: number[];
}

export interface MetricsDefinition {
	counters?: Record<string, MetricSpec>;
	gauges?: Record<string, MetricSpec>;
	histograms?: Record<string, HistogramSpec>;
	/**
	 * Label-value combinations kept per metric. Past it, new combinations are counted under `_other` (and a warning
	 * is logged once), so a label fed an id by mistake cannot grow the node's memory and the scrape without bound.
	 * Default 100.
	 */
	maxSeries?: number;
}

export type LabelValues = Record<string, string | number | boolean>;

export interface ServiceCounter {
	inc(labels?: LabelValues, value?: number): void;
}

export interface ServiceGauge {
	set(labels: LabelValues, value: number): void;
	inc(labels?: LabelValues, value?: number): void;
	dec(labels?: LabelValues, value?: number): void;
}

export interface ServiceHistogram {
	observe(labels: LabelValues, seconds: number): void;
	/** Starts a timer; calling the returned function observes the seconds elapsed (with extra labels, if given). */
	startTimer(labels?: LabelValues): (more?: LabelValues) => number;
}

/** `this.metrics` of a service using the mixin, typed from its definition. */
export type ServiceMetrics<D extends MetricsDefinition> = { [K in keyof D["counters"]]: ServiceCounter } & {
	[K in keyof D["gauges"]]: ServiceGauge;
} & { [K in keyof D["histograms"]]: ServiceHistogram };

export type MetricsMixinSchema<D extends MetricsDefinition> = Partial<ServiceSchema> & {
	/** Typed access to a service instance's metrics: `orderMetrics.of(this).orders_total.inc({ channel })`. */
	of(service: unknown): ServiceMetrics<D>;
};

const OVERFLOW = "_other";

/** Keeps the label sets of one metric within `max` distinct combinations. */
function labelGuard(metric: string, names: readonly string[], max: number, warn: (msg: string) => void) {
	const seen = new Set<string>();
	let warned = false;
	const overflow = Object.fromEntries(names.map(n => [n, OVERFLOW]));
	return (labels: LabelValues | undefined): Record<string, string> => {
		if (names.length === 0) return {};
		const out: Record<string, string> = {};
		for (const n of names) out[n] = labels?.[n] === undefined ? "" : String(labels[n]);
		const key = names.map(n => out[n]).join("\u0000");
		if (seen.has(key)) return out;
		if (seen.size < max) {
			seen.add(key);
			return out;
		}
		if (!warned) {
			warned = true;
			warn(`Metric '${metric}' exceeded ${max} label combinations; new ones are counted as '${OVERFLOW}'. Is a label fed an id?`);
		}
		return overflow;
	};
}

function existingOrNew<T extends Metric>(registry: Registry, name: string, type: new (...args: never[]) => T, create: () => T): T {
	const existing = registry.getSingleMetric(name);
	if (!existing) return create();
	// The same definition on a second service instance (e.g. two versions on one node) shares the series.
	if (existing instanceof type) return existing;
	throw new Error(`Metric '${name}' is already registered on this node with another type`);
}

/**
 * Lets a service declare its own counters, gauges and histograms in the node's prom-client registry (the one
 * served at /metrics, `broker.options.metricsRegistry`), next to the RED metrics the node records for it:
 *
 * ```ts
 * const metrics = MetricsMixin({
 *   counters: { shop_orders_total: { help: "Orders placed", labels: ["channel"] } },
 *   histograms: { shop_payment_seconds: { help: "Payment provider latency" } }
 * });
 * // in the schema: mixins: [metrics]; in a handler:
 * metrics.of(this).shop_orders_total.inc({ channel: "web" });
 * const done = metrics.of(this).shop_payment_seconds.startTimer(); … done();
 * ```
 * Plain JavaScript services use `this.metrics.shop_orders_total`. Label values are bounded per metric
 * (`maxSeries`).
 */
export function MetricsMixin<D extends MetricsDefinition>(def: D): MetricsMixinSchema<D> {
	const max = def.maxSeries ?? 100;

	function build(service: Service): Record<string, unknown> {
		const options = service.broker.options as { metricsRegistry?: Registry };
		// A broker not built from Lattice's config has no shared registry: the service still works, unexposed.
		const registry = options.metricsRegistry ?? new Registry();
		const registers = [registry];
		const warn = (msg: string) => service.logger.warn(msg);
		const out: Record<string, unknown> = {};

		for (const [name, spec] of Object.entries(def.counters ?? {})) {
			const labels = spec.labels ?? [];
			const guard = labelGuard(name, labels, max, warn);
			const c = existingOrNew(registry, name, Counter, () => new Counter({ name, help: spec.help, labelNames: labels, registers }));
			out[name] = { inc: (l?: LabelValues, v = 1) => c.inc(guard(l), v) } satisfies ServiceCounter;
		}
		for (const [name, spec] of Object.entries(def.gauges ?? {})) {
			const labels = spec.labels ?? [];
			const guard = labelGuard(name, labels, max, warn);
			const g = existingOrNew(registry, name, Gauge, () => new Gauge({ name, help: spec.help, labelNames: labels, registers }));
			out[name] = {
				set: (l: LabelValues, v: number) => g.set(guard(l), v),
				inc: (l?: LabelValues, v = 1) => g.inc(guard(l), v),
				dec: (l?: LabelValues, v = 1) => g.dec(guard(l), v)
			} satisfies ServiceGauge;
		}
		for (const [name, spec] of Object.entries(def.histograms ?? {})) {
			const labels = spec.labels ?? [];
			const guard = labelGuard(name, labels, max, warn);
			const h = existingOrNew(
				registry,
				name,
				Histogram,
				() => new Histogram({ name, help: spec.help, labelNames: labels, buckets: spec.buckets ?? DEFAULT_BUCKETS, registers })
			);
			out[name] = {
				observe: (l: LabelValues, v: number) => h.observe(guard(l), v),
				startTimer: (l?: LabelValues) => {
					const start = performance.now();
					return (more?: LabelValues) => {
						const seconds = (performance.now() - start) / 1000;
						h.observe(guard({ ...l, ...more }), seconds);
						return seconds;
					};
				}
			} satisfies ServiceHistogram;
		}
		return out;
	}

	const schema: Partial<ServiceSchema> = {
		created(this: Service & { metrics?: Record<string, unknown> }) {
			this.metrics = build(this);
		}
	};
	// Not enumerable: Moleculer's schema merge copies enumerable keys only, and `of` is not part of the service.
	Object.defineProperty(schema, "of", {
		value: (service: unknown) => (service as { metrics: ServiceMetrics<D> }).metrics,
		enumerable: false
	});
	return schema as MetricsMixinSchema<D>;
}
