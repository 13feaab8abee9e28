import { interleave, type CellPlan } from "../interleave.ts";
import { PAYLOADS, type PayloadName } from "../payloads.ts";
import { measure, startRemoteSystem, warmUp, type RemoteSystem } from "../remote.ts";
import { fmtFixed, fmtInt, fmtMs, fmtRatio, type Table } from "../table.ts";
import { medianOf, pairedRatio, type Suite, type SuiteContext, type SuiteResult } from "./suite.ts";

const CONCURRENCY = [1, 16, 64];
const PAYLOAD_NAMES: PayloadName[] = ["small", "1KiB"];
const OPEN_RATE = 1000;
const OPEN_PAYLOAD: PayloadName = "1KiB";

/**
 * Items 1 and 2: a remote call between two processes over NATS, Lattice's default config against bare Moleculer,
 * closed loop at several concurrencies, then open loop at a fixed rate. Request/reply straight on nats.js runs in
 * the closed-loop cells as the floor: what no framework over this NATS can beat by much.
 */
export const remoteSuite: Suite = {
	name: "remote",
	async run(ctx: SuiteContext): Promise<SuiteResult> {
		const { options } = ctx;
		const systems: RemoteSystem[] = [];
		try {
			systems.push(await startRemoteSystem("lattice", { kind: "lattice", transporter: options.natsUrl }));
			systems.push(await startRemoteSystem("bare", { kind: "bare", transporter: options.natsUrl }));
			systems.push(await startRemoteSystem("nats", { kind: "nats", transporter: options.natsUrl }));
			for (const s of systems) await warmUp(s, options.warmupMs * 3, PAYLOAD_NAMES.map(p => PAYLOADS[p]));

			const closedCells: CellPlan[] = PAYLOAD_NAMES.flatMap(payload =>
				CONCURRENCY.map(concurrency => ({
					cell: `${payload} c=${concurrency}`,
					contenders: systems.map(s => ({
						system: s.name,
						run: () =>
							measure(s, {
								closed: {
									action: "bench.echo",
									params: { kind: "fixed", value: PAYLOADS[payload] },
									concurrency,
									warmupMs: options.warmupMs,
									durationMs: options.cellMs
								}
							})
					}))
				}))
			);
			const openCell: CellPlan = {
				cell: `${OPEN_PAYLOAD} @${OPEN_RATE}/s`,
				contenders: systems.filter(s => s.name !== "nats").map(s => ({
					system: s.name,
					run: () =>
						measure(s, {
							open: {
								action: "bench.echo",
								params: { kind: "fixed", value: PAYLOADS[OPEN_PAYLOAD] },
								rate: OPEN_RATE,
								warmupMs: 1000,
								durationMs: options.openMs
							}
						})
				}))
			};
			const closed = await interleave("remote", closedCells, options.rounds, ctx.progress);
			const open = await interleave("remote-open", [openCell], options.rounds, ctx.progress);
			return {
				name: "remote",
				cells: [...closed, ...open],
				tables: [closedTable(closedCells, closed), openTable(openCell.cell, open)],
				notes: []
			};
		} finally {
			await Promise.all(systems.map(s => s.stop()));
		}
	}
};

function cpuPerCall(m: Record<string, number>): number {
	return (m.clientUs ?? Number.NaN) + (m.serverUs ?? Number.NaN);
}

function closedTable(cells: CellPlan[], results: SuiteResult["cells"]): Table {
	return {
		title: "1. Remote request/response over NATS, closed loop (median of rounds; latency in ms; CPU = client + server µs per call)",
		columns: [
			"payload / in flight",
			"Lattice calls/s",
			"bare calls/s",
			"L/bare",
			"NATS floor calls/s",
			"bare/floor",
			"L p50",
			"bare p50",
			"L p99",
			"bare p99",
			"L CPU µs",
			"bare CPU µs"
		],
		rows: cells.map(({ cell }) => {
			const l = medianOf(results, cell, "lattice");
			const b = medianOf(results, cell, "bare");
			const f = medianOf(results, cell, "nats");
			return [
				cell,
				fmtInt(l.rate),
				fmtInt(b.rate),
				fmtRatio(pairedRatio(results, "rate", { cell, system: "lattice" }, { cell, system: "bare" })),
				fmtInt(f.rate),
				fmtRatio(pairedRatio(results, "rate", { cell, system: "bare" }, { cell, system: "nats" })),
				fmtMs(l.p50),
				fmtMs(b.p50),
				fmtMs(l.p99),
				fmtMs(b.p99),
				fmtFixed(cpuPerCall(l)),
				fmtFixed(cpuPerCall(b))
			];
		}),
		notes: [
			"Errors in any cell are listed in results.json (field errors); nats-server's own CPU is not included.",
			"NATS floor: request/reply straight on nats.js with the same JSON and NATS, no framework (test/bench/roles/nats-floor.ts)."
		]
	};
}

function openTable(cell: string, results: SuiteResult["cells"]): Table {
	const l = medianOf(results, cell, "lattice");
	const b = medianOf(results, cell, "bare");
	const row = (name: string, m: Record<string, number>): string[] => [
		name,
		fmtMs(m.p50),
		fmtMs(m.p90),
		fmtMs(m.p99),
		fmtMs(m.sendLagP99),
		fmtFixed(m.clientUs),
		fmtFixed(m.serverUs),
		fmtFixed(cpuPerCall(m) / 1000, 3),
		fmtInt(m.errors)
	];
	const added = (k: string) => fmtMs((l[k] ?? Number.NaN) - (b[k] ?? Number.NaN));
	return {
		title: `2. Open loop, ${cell} (latency from the scheduled send time, ms)`,
		columns: ["system", "p50", "p90", "p99", "send lag p99", "client µs/call", "server µs/call", "vCPU per 1k/s", "errors"],
		rows: [row("Lattice", l), row("bare", b), ["Lattice − bare", added("p50"), added("p90"), added("p99"), "", "", "", "", ""]],
		notes: ["vCPU per 1k/s: client + server CPU needed per 1,000 calls/s (nats-server not included)."]
	};
}
