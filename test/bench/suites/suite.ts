import type { CellResult, Metrics } from "../interleave.ts";
import type { BenchOptions, SuiteName } from "../options.ts";
import { median } from "../stats.ts";
import type { Table } from "../table.ts";

export interface SuiteContext {
	options: BenchOptions;
	progress(line: string): void;
}

export interface SuiteResult {
	name: SuiteName;
	cells: CellResult[];
	tables: Table[];
	/** Anything a reader of the figures must know (skipped systems, caveats of the set-up). */
	notes: string[];
}

export interface Suite {
	name: SuiteName;
	run(ctx: SuiteContext): Promise<SuiteResult>;
}

/** The median figures of one system in one cell. */
export function medianOf(cells: CellResult[], cell: string, system: string): Metrics {
	return cells.find(c => c.cell === cell && c.system === system)?.median ?? {};
}

/**
 * Median over rounds of a/b, each round's pair measured back to back: steadier than the ratio of two medians
 * when the machine's load drifts during the run.
 */
export function pairedRatio(
	cells: CellResult[],
	key: string,
	a: { cell: string; system: string },
	b: { cell: string; system: string }
): number {
	const ra = cells.find(c => c.cell === a.cell && c.system === a.system)?.rounds ?? [];
	const rb = cells.find(c => c.cell === b.cell && c.system === b.system)?.rounds ?? [];
	const n = Math.min(ra.length, rb.length);
	return median(Array.from({ length: n }, (_, i) => (ra[i]![key] ?? Number.NaN) / (rb[i]![key] ?? Number.NaN)));
}
