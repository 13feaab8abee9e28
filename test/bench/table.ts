/** Plain-text tables for the terminal, and the number formats they use. */

export interface Table {
	title: string;
	columns: string[];
	rows: string[][];
	notes?: string[];
}

export function renderTable(t: Table): string {
	const widths = t.columns.map((c, i) => Math.max(c.length, ...t.rows.map(r => (r[i] ?? "").length)));
	// First column reads as a label (left), the rest as figures (right).
	const line = (cells: string[]) =>
		cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
	const out = [`\n${t.title}`, line(t.columns), widths.map(w => "-".repeat(w)).join("  "), ...t.rows.map(line)];
	for (const n of t.notes ?? []) out.push(`  ${n}`);
	return out.join("\n") + "\n";
}

const NA = "–";

export function fmtInt(n: number | undefined): string {
	return n === undefined || !Number.isFinite(n) ? NA : Math.round(n).toLocaleString("en-US");
}

export function fmtMs(n: number | undefined): string {
	return n === undefined || !Number.isFinite(n) ? NA : n.toFixed(n < 10 ? 3 : 1);
}

export function fmtFixed(n: number | undefined, digits = 1): string {
	return n === undefined || !Number.isFinite(n) ? NA : n.toFixed(digits);
}

export function fmtRatio(r: number | undefined): string {
	return r === undefined || !Number.isFinite(r) ? NA : `${r.toFixed(2)}×`;
}

export function fmtPercent(n: number | undefined): string {
	return n === undefined || !Number.isFinite(n) ? NA : `${Math.round(n * 100)}%`;
}
