import { Worker } from "node:worker_threads";
import type { LoadResult, OpenLoopSpec } from "../protocol.ts";
import { summarize } from "../stats.ts";
import { wallNow } from "./clock.ts";
import type { Call } from "./closed-loop.ts";
import { cpuMicros } from "./ipc.ts";
import type { PacerInput, PacerMessage } from "./pacer.worker.ts";
import { paramsSource } from "./params.ts";

/** How long to wait for stragglers once the last call is sent. */
const DRAIN_MS = 10_000;

/**
 * Sends calls at a fixed rate whatever the replies do, and measures each one from the time it was *scheduled*
 * to leave: a slow reply delays nothing, and a late send counts against the system (no coordinated omission).
 */
export function openLoop(call: Call, spec: OpenLoopSpec): Promise<LoadResult> {
	const next = paramsSource(spec.params);
	const intervalMs = 1000 / spec.rate;
	const warmCount = Math.round(spec.warmupMs / intervalMs);
	const input: PacerInput = {
		startAt: wallNow() + 50,
		intervalMs,
		count: warmCount + Math.round(spec.durationMs / intervalMs)
	};
	const samples: number[] = [];
	const lags: number[] = [];
	let errors = 0;
	let sent = 0;
	let pending = 0;
	// CPU is counted over the whole run (warm-up included) without the pacer thread, and divided by every call sent.
	const cpuStart = cpuMicros();
	let pacerCpu = 0;
	let pacerDone = false;

	return new Promise((resolve, reject) => {
		const worker = new Worker(new URL("./pacer.worker.ts", import.meta.url), { workerData: input });
		let drainTimer: NodeJS.Timeout | undefined;
		let finished = false;

		const finish = () => {
			if (finished) return;
			finished = true;
			clearTimeout(drainTimer);
			const cpu = cpuMicros() - cpuStart - pacerCpu;
			const s = summarize(samples);
			resolve({
				calls: s.count,
				// Calls still unanswered after the drain count as failed.
				errors: errors + pending,
				seconds: spec.durationMs / 1000,
				rate: s.count / (spec.durationMs / 1000),
				mean: s.mean,
				p50: s.p50,
				p90: s.p90,
				p99: s.p99,
				max: s.max,
				clientCpuUsPerCall: cpu / Math.max(1, sent),
				sendLagP99: summarize(lags).p99
			});
		};
		const settle = () => {
			if (pacerDone && pending === 0) finish();
		};

		worker.on("message", (msg: PacerMessage) => {
			if (typeof msg !== "number") {
				pacerCpu = msg.cpuUs;
				pacerDone = true;
				drainTimer = setTimeout(finish, DRAIN_MS);
				return settle();
			}
			const measured = sent++ >= warmCount;
			if (measured) lags.push(wallNow() - msg);
			pending++;
			call(next()).then(
				() => {
					if (measured) samples.push(wallNow() - msg);
				},
				() => {
					if (measured) errors++;
				}
			).finally(() => {
				pending--;
				settle();
			});
		});
		worker.on("error", reject);
	});
}
