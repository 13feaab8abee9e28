/** Percentiles and medians over latency samples (milliseconds). */

/** Nearest-rank percentile of an ascending array; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
	if (sorted.length === 0) return Number.NaN;
	const rank = Math.ceil((p / 100) * sorted.length);
	return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface LatencySummary {
	count: number;
	mean: number;
	p50: number;
	p90: number;
	p99: number;
	max: number;
}

export function summarize(samples: ArrayLike<number>): LatencySummary {
	const sorted = Float64Array.from(samples).sort();
	let sum = 0;
	for (const v of sorted) sum += v;
	return {
		count: sorted.length,
		mean: sorted.length ? sum / sorted.length : Number.NaN,
		p50: percentile(sorted, 50),
		p90: percentile(sorted, 90),
		p99: percentile(sorted, 99),
		max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN
	};
}

/** Median of the finite values; NaN when there are none. */
export function median(values: readonly number[]): number {
	const v = values.filter(Number.isFinite).sort((a, b) => a - b);
	if (v.length === 0) return Number.NaN;
	const mid = v.length >> 1;
	return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}
