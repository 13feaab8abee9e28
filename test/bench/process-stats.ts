import { PerformanceObserver, constants as perf } from "node:perf_hooks";

/** What a benchmarked process has spent so far: CPU in all and on its main thread (µs), and its GCs. */
export interface ProcessStats {
	cpuUs: number;
	/** The main thread alone; the rest of cpuUs is V8's helper threads and libuv's pool. */
	mainThreadUs: number;
	minorGcs: number;
	majorGcs: number;
	gcMs: number;
}

/** Starts counting this process's GCs; the returned function reads the running totals. */
export function watchProcessStats(): () => ProcessStats {
	const gc = { minorGcs: 0, majorGcs: 0, gcMs: 0 };
	new PerformanceObserver(list => {
		for (const e of list.getEntries()) {
			const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
			if (kind === perf.NODE_PERFORMANCE_GC_MAJOR) gc.majorGcs++;
			else if (kind === perf.NODE_PERFORMANCE_GC_MINOR) gc.minorGcs++;
			gc.gcMs += e.duration;
		}
	}).observe({ entryTypes: ["gc"] });
	return () => {
		const all = process.cpuUsage();
		const main = process.threadCpuUsage();
		return { cpuUs: all.user + all.system, mainThreadUs: main.user + main.system, ...gc };
	};
}
