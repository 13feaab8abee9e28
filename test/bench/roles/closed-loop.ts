import type { ClosedLoopSpec, LoadResult } from "../protocol.ts";
import { summarize } from "../stats.ts";
import { cpuMicros } from "./ipc.ts";
import { paramsSource } from "./params.ts";

export type Call = (params: unknown) => Promise<unknown>;

/**
 * `concurrency` callers, each sending its next call as soon as the previous one answers, for a fixed time.
 * Calls started during the warm-up are not counted.
 */
export async function closedLoop(call: Call, spec: ClosedLoopSpec): Promise<LoadResult> {
	const next = paramsSource(spec.params);
	const measureFrom = performance.now() + spec.warmupMs;
	const stopAt = measureFrom + spec.durationMs;
	const samples: number[] = [];
	let errors = 0;
	let firstMeasured = Number.NaN;
	let cpuStart = 0;

	async function caller(): Promise<void> {
		for (;;) {
			const t0 = performance.now();
			if (t0 >= stopAt) return;
			const measured = t0 >= measureFrom;
			if (measured && Number.isNaN(firstMeasured)) {
				firstMeasured = t0;
				cpuStart = cpuMicros();
			}
			try {
				await call(next());
				if (measured) samples.push(performance.now() - t0);
			} catch {
				if (measured) errors++;
			}
		}
	}

	await Promise.all(Array.from({ length: spec.concurrency }, caller));
	const seconds = (performance.now() - firstMeasured) / 1000;
	const cpu = cpuMicros() - cpuStart;
	const s = summarize(samples);
	return {
		calls: s.count,
		errors,
		seconds,
		rate: s.count / seconds,
		mean: s.mean,
		p50: s.p50,
		p90: s.p90,
		p99: s.p99,
		max: s.max,
		clientCpuUsPerCall: cpu / Math.max(1, s.count)
	};
}
