/**
 * Steady load with counters: the traffic a chaos test keeps up while it breaks something, and the record it reads
 * afterwards (how many calls failed, with which error, when, and how long calls took around the fault).
 */

export interface LoadOptions {
	/** Makes one call; a rejection counts as a failed call. `seq` numbers calls from 0. */
	call: (seq: number) => Promise<unknown>;
	/** Closed loop: this many callers, each starting its next call when the last one ends. Default 32. */
	concurrency?: number;
	/**
	 * Open loop instead: start this many calls per second whatever the answers do, so a slow server cannot slow the
	 * offered load down. Latency is then measured from each call's scheduled time. `concurrency` caps the calls in
	 * flight (0 = no cap; calls over the cap count as failed with type `CLIENT_SATURATED`).
	 */
	rate?: number;
}

/** One finished call: when it started and ended (ms since the load started) and what became of it. */
export interface CallRecord {
	start: number;
	end: number;
	ok: boolean;
	/** Error type (`err.type`, else `err.name`) of a failed call. */
	error?: string;
}

export interface LatencySummary {
	p50: number;
	p90: number;
	p99: number;
	max: number;
}

export interface LoadReport {
	calls: number;
	ok: number;
	failed: number;
	/** Failed calls by error type. */
	errors: Record<string, number>;
	durationMs: number;
	/** Completed calls per second. */
	throughput: number;
	/** Of every call, in ms. */
	latency: LatencySummary;
	/** Of successful calls only, in ms. */
	okLatency: LatencySummary;
	/** Ms since the start of the first and last failed call, null when none failed. */
	firstFailure: number | null;
	lastFailure: number | null;
	records: CallRecord[];
}

/** The first message of an error and its type, whatever was thrown. */
export function errorType(err: unknown): string {
	const e = err as { type?: unknown; name?: unknown; code?: unknown } | null;
	if (e && typeof e.type === "string" && e.type) return e.type;
	if (e && typeof e.name === "string" && e.name && e.name !== "Error") return e.name;
	if (e && e.code !== undefined) return String(e.code);
	return "Error";
}

/** The p-th percentile (0–100) of already sorted numbers; 0 for none. */
export function percentile(sorted: number[], p: number): number {
	if (sorted.length === 0) return 0;
	const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
	return sorted[i]!;
}

export function summarize(latencies: number[]): LatencySummary {
	const s = [...latencies].sort((a, b) => a - b);
	return { p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), max: s.at(-1) ?? 0 };
}

/** Counters of a running load; the full report comes from `stop()`. */
export interface Load {
	readonly startedAt: number;
	/** Ms since the load started: the clock `CallRecord` and the window helpers use. */
	now(): number;
	readonly sent: number;
	readonly ok: number;
	readonly failed: number;
	readonly inFlight: number;
	/** Calls finished in [from, to) ms: how many, and how many of them failed. */
	window(from: number, to?: number): { calls: number; ok: number; failed: number };
	/** Resolves once `n` more calls have succeeded (or rejects after `timeoutMs`). */
	successes(n: number, timeoutMs?: number): Promise<void>;
	/** Stops starting calls, waits for the ones in flight, and reports. */
	stop(): Promise<LoadReport>;
}

export function startLoad(opts: LoadOptions): Load {
	const t0 = performance.now();
	const now = () => performance.now() - t0;
	const records: CallRecord[] = [];
	const waiters: { target: number; resolve: () => void }[] = [];
	let running = true;
	let seq = 0;
	let ok = 0;
	let failed = 0;
	let inFlight = 0;
	let idle: (() => void) | null = null;

	function settle(start: number, error: string | undefined): void {
		records.push({ start, end: now(), ok: error === undefined, error });
		if (error === undefined) {
			ok++;
			for (let i = waiters.length - 1; i >= 0; i--) {
				if (ok >= waiters[i]!.target) waiters.splice(i, 1)[0]!.resolve();
			}
		} else failed++;
	}

	async function one(start: number): Promise<void> {
		inFlight++;
		try {
			await opts.call(seq++);
			settle(start, undefined);
		} catch (err) {
			settle(start, errorType(err));
		} finally {
			inFlight--;
			if (inFlight === 0 && idle) idle();
		}
	}

	const concurrency = opts.concurrency ?? 32;
	let pacer: NodeJS.Timeout | null = null;
	if (opts.rate) {
		const rate = opts.rate;
		let issued = 0;
		pacer = setInterval(() => {
			// Catch up to the schedule: each call is due at issued / rate seconds.
			const due = Math.floor((now() / 1000) * rate);
			while (issued < due && running) {
				const scheduled = (issued / rate) * 1000;
				issued++;
				if (concurrency > 0 && inFlight >= concurrency) settle(scheduled, "CLIENT_SATURATED");
				else void one(scheduled);
			}
		}, 2);
	} else {
		for (let w = 0; w < concurrency; w++) {
			void (async () => {
				while (running) await one(now());
			})();
		}
	}

	return {
		startedAt: Date.now(),
		now,
		get sent() {
			return seq;
		},
		get ok() {
			return ok;
		},
		get failed() {
			return failed;
		},
		get inFlight() {
			return inFlight;
		},
		window(from: number, to = Infinity) {
			let calls = 0;
			let good = 0;
			for (const r of records) {
				if (r.end < from || r.end >= to) continue;
				calls++;
				if (r.ok) good++;
			}
			return { calls, ok: good, failed: calls - good };
		},
		successes(n: number, timeoutMs = 30_000) {
			const target = ok + n;
			return new Promise<void>((resolve, reject) => {
				const timer = setTimeout(() => {
					const i = waiters.findIndex(w => w.resolve === done);
					if (i !== -1) waiters.splice(i, 1);
					reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${n} successful calls (${ok - target + n} so far)`));
				}, timeoutMs);
				const done = () => {
					clearTimeout(timer);
					resolve();
				};
				waiters.push({ target, resolve: done });
			});
		},
		async stop() {
			running = false;
			if (pacer) clearInterval(pacer);
			if (inFlight > 0) await new Promise<void>(r => (idle = r));
			const durationMs = now();
			const errors: Record<string, number> = {};
			let firstFailure: number | null = null;
			let lastFailure: number | null = null;
			for (const r of records) {
				if (r.ok) continue;
				errors[r.error!] = (errors[r.error!] ?? 0) + 1;
				firstFailure = firstFailure === null ? r.start : Math.min(firstFailure, r.start);
				lastFailure = lastFailure === null ? r.start : Math.max(lastFailure, r.start);
			}
			return {
				calls: records.length,
				ok,
				failed,
				errors,
				durationMs,
				throughput: records.length / (durationMs / 1000),
				latency: summarize(records.map(r => r.end - r.start)),
				okLatency: summarize(records.filter(r => r.ok).map(r => r.end - r.start)),
				firstFailure,
				lastFailure,
				records
			};
		}
	};
}

/** An HTTP failure as a load counts it: `code` is the status, `type` the Lattice error type from the body. */
export class HttpCallError extends Error {
	readonly code: number;
	readonly type: string;
	constructor(code: number, type: string, message: string) {
		super(message);
		this.code = code;
		this.type = type;
	}
}

/**
 * A `call` for `startLoad` that fetches `url` (the same for every call, or built from the call's number) and
 * fails on any non-2xx status, typed by the JSON error body's `type` (else `HTTP_<status>`). Connection errors
 * fail with their own code (e.g. `ECONNREFUSED`).
 */
export function httpCall(url: string | ((seq: number) => string), init: RequestInit = {}): (seq: number) => Promise<unknown> {
	return async (seq: number) => {
		const target = typeof url === "string" ? url : url(seq);
		let res: Response;
		try {
			res = await fetch(target, init);
		} catch (err) {
			const cause = (err as { cause?: { code?: string } }).cause;
			throw new HttpCallError(0, cause?.code ?? "FETCH_FAILED", String(err));
		}
		const text = await res.text();
		if (res.ok) return text ? JSON.parse(text) : undefined;
		let type = `HTTP_${res.status}`;
		try {
			type = (JSON.parse(text) as { type?: string }).type ?? type;
		} catch {
			// Not JSON: the status says it all.
		}
		throw new HttpCallError(res.status, type, text.slice(0, 200));
	};
}
