import { parentPort, workerData } from "node:worker_threads";
import { wallNow } from "./clock.ts";

export interface PacerInput {
	/** wallNow() of the first tick. */
	startAt: number;
	intervalMs: number;
	count: number;
}

/** A tick carries its scheduled time; the last message is the pacer's own CPU, to be subtracted from the client's. */
export type PacerMessage = number | { cpuUs: number };

/**
 * Ticks on a fixed schedule with sub-millisecond accuracy, which Node timers (whole milliseconds, late under load)
 * cannot give. It sleeps on a futex until just before each tick, then spins the rest, so it keeps the schedule
 * without burning a whole core.
 */
const SPIN_MS = 0.15;
const { startAt, intervalMs, count } = workerData as PacerInput;
const port = parentPort!;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

for (let i = 0; i < count; i++) {
	const due = startAt + i * intervalMs;
	const ahead = due - wallNow();
	if (ahead > SPIN_MS) Atomics.wait(sleeper, 0, 0, ahead - SPIN_MS);
	while (wallNow() < due) {
		// spin: the last stretch is shorter than the kernel's timer slack
	}
	port.postMessage(due satisfies PacerMessage);
}

// The thread's whole life, module loading included: the client subtracts it from its process's CPU.
const cpu = process.threadCpuUsage();
port.postMessage({ cpuUs: cpu.user + cpu.system } satisfies PacerMessage);
