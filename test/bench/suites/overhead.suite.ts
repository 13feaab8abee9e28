import { interleave, type CellPlan } from "../interleave.ts";
import { PAYLOADS } from "../payloads.ts";
import { BROKER_OPTION_FEATURES, type LatticeFeature } from "../protocol.ts";
import { measure, startRemoteSystem, warmUp, type RemoteSystem, type SystemSpec } from "../remote.ts";
import { fmtFixed, fmtInt, fmtMs, fmtRatio, type Table } from "../table.ts";
import { medianOf, pairedRatio, type Suite, type SuiteContext, type SuiteResult } from "./suite.ts";

/** Lifecycle-only middlewares: nothing per call to measure. */
const NOT_PER_CALL = new Set(["OpsServer"]);
const CONCURRENCY = [16, 64];

/** The features to try without: every per-call middleware in Lattice's config as it is now, then broker options. */
async function features(natsUrl: string): Promise<LatticeFeature[]> {
	// Loaded here only: the rest of the orchestrator stays free of Lattice's whole stack.
	const { brokerOptions, latticeMiddlewareNames } = await import("../systems.ts");
	const options = brokerOptions({ kind: "lattice", namespace: "probe", nodeID: "probe", transporter: natsUrl });
	const middlewares = latticeMiddlewareNames(options).filter(n => !NOT_PER_CALL.has(n));
	return [...middlewares.map((n): LatticeFeature => `middleware:${n}`), ...BROKER_OPTION_FEATURES];
}

/**
 * Not in the default run (`--only overhead`): where Lattice's per-call cost over bare Moleculer comes from. The
 * remote call of suite 1 with Lattice's config, then with one feature switched off at a time, then all of them.
 */
export const overheadSuite: Suite = {
	name: "overhead",
	async run(ctx: SuiteContext): Promise<SuiteResult> {
		const { options } = ctx;
		const lattice: SystemSpec = { kind: "lattice", transporter: options.natsUrl };
		const all = await features(options.natsUrl);
		const variants: Array<[string, SystemSpec]> = [
			["bare", { kind: "bare", transporter: options.natsUrl }],
			["Lattice", lattice],
			...all.map((f): [string, SystemSpec] => [`Lattice − ${f.replace("middleware:", "")}`, { ...lattice, without: [f] }]),
			["Lattice − all of these", { ...lattice, without: all }]
		];
		const systems: RemoteSystem[] = [];
		try {
			for (const [name, spec] of variants) systems.push(await startRemoteSystem(name, spec));
			for (const s of systems) await warmUp(s, options.warmupMs * 3);
			const cells: CellPlan[] = CONCURRENCY.map(concurrency => ({
				cell: `small c=${concurrency}`,
				contenders: systems.map(s => ({
					system: s.name,
					run: () =>
						measure(s, {
							closed: {
								action: "bench.echo",
								params: { kind: "fixed", value: PAYLOADS.small },
								concurrency,
								warmupMs: options.warmupMs,
								durationMs: options.cellMs
							}
						})
				}))
			}));
			const results = await interleave("overhead", cells, options.rounds, ctx.progress);
			return { name: "overhead", cells: results, tables: [table(cells, variants.map(([n]) => n), results)], notes: [] };
		} finally {
			await Promise.all(systems.map(s => s.stop()));
		}
	}
};

function table(cells: CellPlan[], systems: string[], results: SuiteResult["cells"]): Table {
	return {
		title: "Overhead breakdown: Lattice's config minus one feature at a time (median; CPU = client + server µs per call)",
		columns: ["config", ...cells.flatMap(({ cell }) => [`${cell} calls/s`, "÷bare", "p50", "CPU µs"])],
		rows: systems.map(system => [
			system,
			...cells.flatMap(({ cell }) => {
				const m = medianOf(results, cell, system);
				const vsBare = pairedRatio(results, "rate", { cell, system }, { cell, system: "bare" });
				return [fmtInt(m.rate), fmtRatio(vsBare), fmtMs(m.p50), fmtFixed((m.clientUs ?? NaN) + (m.serverUs ?? NaN))];
			})
		])
	};
}
