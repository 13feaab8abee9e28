import type { Metric, Registry } from "prom-client";

/**
 * Counters, gauges and histograms for the per-call hot path, rendered by a prom-client registry like its own.
 * prom-client's `metric.labels(...)` child re-validates and re-hashes its labels on every increment (~0.5 µs, and
 * four of them per call were a quarter of a local call's CPU when measured here); these children are bound once
 * and an update is a field increment. Label values are fixed when a child is made, so bound children are made
 * for names (actions, events) only, never for per-request values.
 */

type Labels = Record<string, string>;

interface MetricValue {
	value: number;
	labels: Labels;
	metricName?: string;
}

interface Options {
	name: string;
	help: string;
	labelNames?: readonly string[];
	registers?: Registry[];
}

abstract class FastMetric<Child> {
	readonly name: string;
	readonly help: string;
	readonly aggregator = "sum";
	abstract readonly type: "counter" | "gauge" | "histogram";
	protected readonly labelNames: readonly string[];
	protected readonly children = new Map<string, Child & { labels: Labels }>();

	constructor(opts: Options) {
		this.name = opts.name;
		this.help = opts.help;
		this.labelNames = opts.labelNames ?? [];
		// The registry renders anything with prom-client's get() shape; its typings only list prom-client's classes.
		for (const r of opts.registers ?? []) r.registerMetric(this as unknown as Metric);
	}

	protected abstract create(labels: Labels): Child;

	/** The series for these label values (in labelNames order), made on first use and kept. */
	labels(...values: string[]): Child {
		const key = values.join("\u0000");
		const child = this.children.get(key);
		if (!child) {
			if (values.length !== this.labelNames.length) {
				throw new Error(`${this.name}: expected ${this.labelNames.length} label values, got ${values.length}`);
			}
			const labels = Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]!]));
			const made = Object.assign(this.create(labels) as object, { labels }) as Child & { labels: Labels };
			this.children.set(key, made);
			return made;
		}
		return child;
	}

	protected abstract values(): MetricValue[];

	async get() {
		return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() };
	}

	reset(): void {
		this.children.clear();
	}
}

export interface CounterChild {
	value: number;
	inc(n?: number): void;
}

export class FastCounter extends FastMetric<CounterChild> {
	readonly type = "counter";

	protected create(): CounterChild {
		return {
			value: 0,
			inc(n = 1) {
				this.value += n;
			}
		};
	}

	protected values(): MetricValue[] {
		return [...this.children.values()].map(c => ({ value: c.value, labels: c.labels }));
	}
}

export interface GaugeChild {
	value: number;
	inc(n?: number): void;
	dec(n?: number): void;
}

export class FastGauge extends FastMetric<GaugeChild> {
	readonly type = "gauge";

	protected create(): GaugeChild {
		return {
			value: 0,
			inc(n = 1) {
				this.value += n;
			},
			dec(n = 1) {
				this.value -= n;
			}
		};
	}

	protected values(): MetricValue[] {
		return [...this.children.values()].map(c => ({ value: c.value, labels: c.labels }));
	}
}

export interface HistogramChild {
	observe(value: number): void;
}

interface HistogramSeries extends HistogramChild {
	/** Per-bucket counts, not cumulative; the last slot is +Inf. */
	counts: Float64Array;
	sum: number;
	count: number;
}

export class FastHistogram extends FastMetric<HistogramSeries> {
	readonly type = "histogram";
	private readonly bounds: readonly number[];

	constructor(opts: Options & { buckets: readonly number[] }) {
		super(opts);
		this.bounds = [...opts.buckets].sort((a, b) => a - b);
	}

	protected create(): HistogramSeries {
		const bounds = this.bounds;
		const n = bounds.length;
		return {
			counts: new Float64Array(n + 1),
			sum: 0,
			count: 0,
			observe(value: number) {
				let i = 0;
				while (i < n && value > bounds[i]!) i++;
				this.counts[i]!++;
				this.sum += value;
				this.count++;
			}
		};
	}

	protected values(): MetricValue[] {
		const out: MetricValue[] = [];
		for (const s of this.children.values()) {
			let cumulative = 0;
			// `le` first, as prom-client writes it.
			this.bounds.forEach((b, i) => {
				cumulative += s.counts[i]!;
				out.push({ metricName: `${this.name}_bucket`, labels: { le: String(b), ...s.labels }, value: cumulative });
			});
			out.push({ metricName: `${this.name}_bucket`, labels: { le: "+Inf", ...s.labels }, value: s.count });
			out.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum });
			out.push({ metricName: `${this.name}_count`, labels: s.labels, value: s.count });
		}
		return out;
	}
}
