import { interleave, type CellPlan } from "../interleave.ts";
import type { ParamsSpec } from "../protocol.ts";
import { measure, startRemoteSystem, warmUp, type RemoteSystem } from "../remote.ts";
import { fmtInt, fmtMs, fmtRatio, type Table } from "../table.ts";
import { medianOf, pairedRatio, type Suite, type SuiteContext, type SuiteResult } from "./suite.ts";

const CONCURRENCY = 16;
/** Distinct ids a "hit" run cycles through: all cached after the warm-up. */
const HOT_KEYS = 100;

interface Variant {
	cell: string;
	action: string;
	params(): ParamsSpec;
}

/**
 * Item 3: reads of a cached action called remotely, with Redis behind the cacher. Lattice's two-level cacher
 * against Moleculer's stock Redis cacher; for each, an uncached action, cache hits and cache misses.
 */
export const cacheSuite: Suite = {
	name: "cache",
	async run(ctx: SuiteContext): Promise<SuiteResult> {
		const { options } = ctx;
		let missRun = 0;
		const variants: Variant[] = [
			{ cell: "uncached", action: "bench.read", params: () => ({ kind: "cycle", keys: HOT_KEYS }) },
			{ cell: "cached, hit", action: "bench.readCached", params: () => ({ kind: "cycle", keys: HOT_KEYS }) },
			// Fresh ids every run, so not one call finds its key.
			{ cell: "cached, miss", action: "bench.readCached", params: () => ({ kind: "unique", prefix: `miss${missRun++}` }) }
		];
		const systems: RemoteSystem[] = [];
		try {
			systems.push(await startRemoteSystem("lattice", { kind: "lattice", transporter: options.natsUrl, redis: options.redisUrl }));
			systems.push(await startRemoteSystem("bare", { kind: "bare", transporter: options.natsUrl, redis: options.redisUrl }));
			for (const s of systems) await warmUp(s, options.warmupMs * 3);
			const cells: CellPlan[] = variants.map(v => ({
				cell: v.cell,
				contenders: systems.map(s => ({
					system: s.name,
					run: () =>
						measure(s, {
							closed: {
								action: v.action,
								params: v.params(),
								concurrency: CONCURRENCY,
								warmupMs: options.warmupMs,
								durationMs: options.cellMs
							}
						})
				}))
			}));
			const results = await interleave("cache", cells, options.rounds, ctx.progress);
			return { name: "cache", cells: results, tables: [table(results)], notes: [] };
		} finally {
			await Promise.all(systems.map(s => s.stop()));
		}
	}
};

function table(results: SuiteResult["cells"]): Table {
	const row = (label: string, system: string): string[] => {
		const u = medianOf(results, "uncached", system);
		const h = medianOf(results, "cached, hit", system);
		const m = medianOf(results, "cached, miss", system);
		return [
			label,
			fmtInt(u.rate),
			fmtInt(h.rate),
			fmtInt(m.rate),
			fmtRatio(pairedRatio(results, "rate", { cell: "cached, hit", system }, { cell: "uncached", system })),
			fmtRatio(pairedRatio(results, "rate", { cell: "cached, hit", system }, { cell: "cached, miss", system })),
			fmtMs(u.p50),
			fmtMs(h.p50),
			fmtMs(m.p50),
			fmtMs(h.p99)
		];
	};
	return {
		title: `3. Cached vs uncached remote reads, Redis cacher, ${CONCURRENCY} in flight (median calls/s; latency in ms)`,
		columns: ["system", "uncached/s", "hit/s", "miss/s", "hit÷uncached", "hit÷miss", "uncached p50", "hit p50", "miss p50", "hit p99"],
		rows: [row("Lattice (two-level)", "lattice"), row("bare (stock Redis cacher)", "bare")],
		notes: [
			"The action is trivial, the worst case for a cache: a hit pays off only if it is cheaper than the call it replaces.",
			"Lattice answers a repeated read from the caller's own L1; the stock cacher still crosses NATS, then reads Redis."
		]
	};
}
