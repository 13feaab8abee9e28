import { median } from "./stats.ts";

/** One measurement: named figures (calls/s, latency percentiles in ms, CPU µs …). */
export type Metrics = Record<string, number>;

export interface Contender {
	system: string;
	run(): Promise<Metrics>;
}

export interface CellPlan {
	cell: string;
	contenders: Contender[];
}

export interface CellResult {
	suite: string;
	cell: string;
	system: string;
	rounds: Metrics[];
	median: Metrics;
}

/**
 * Runs every cell `rounds` times, round after round, so slow drift of the machine (thermal, other load) hits
 * every system alike; within a cell the starting system rotates each round.
 */
export async function interleave(
	suite: string,
	cells: CellPlan[],
	rounds: number,
	progress: (line: string) => void
): Promise<CellResult[]> {
	const results = new Map<string, CellResult>();
	for (let r = 0; r < rounds; r++) {
		for (const plan of cells) {
			const n = plan.contenders.length;
			for (let k = 0; k < n; k++) {
				const c = plan.contenders[(k + r) % n]!;
				const key = `${plan.cell}\u0000${c.system}`;
				let entry = results.get(key);
				if (!entry) {
					entry = { suite, cell: plan.cell, system: c.system, rounds: [], median: {} };
					results.set(key, entry);
				}
				entry.rounds.push(await c.run());
			}
			progress(`  ${suite}: round ${r + 1}/${rounds} ${plan.cell}\n`);
		}
	}
	for (const entry of results.values()) entry.median = medianMetrics(entry.rounds);
	return [...results.values()];
}

export function medianMetrics(rounds: Metrics[]): Metrics {
	const keys = new Set(rounds.flatMap(m => Object.keys(m)));
	return Object.fromEntries([...keys].map(k => [k, median(rounds.map(m => m[k] ?? Number.NaN))]));
}
