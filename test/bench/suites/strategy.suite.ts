import { interleave, type CellPlan } from "../interleave.ts";
import { PAYLOADS } from "../payloads.ts";
import type { StrategyName } from "../protocol.ts";
import { measure, startRemoteSystem, warmUp, type RemoteSystem } from "../remote.ts";
import { fmtInt, fmtMs, fmtPercent, type Table } from "../table.ts";
import { medianOf, type Suite, type SuiteContext, type SuiteResult } from "./suite.ts";

const STRATEGIES: StrategyName[] = ["RoundRobin", "Latency", "CpuUsage"];
const CONCURRENCY = [16, 64];
const REPLICAS = 2;

/** Item 6b: Lattice's config with each balancing strategy, one client calling two server replicas. */
export const strategySuite: Suite = {
	name: "strategy",
	async run(ctx: SuiteContext): Promise<SuiteResult> {
		const { options } = ctx;
		const systems: RemoteSystem[] = [];
		try {
			for (const strategy of STRATEGIES) {
				systems.push(await startRemoteSystem(strategy, { kind: "lattice", transporter: options.natsUrl, strategy }, REPLICAS));
			}
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
			const results = await interleave("strategy", cells, options.rounds, ctx.progress);
			return {
				name: "strategy",
				cells: results,
				tables: [table(cells, results)],
				notes: [
					"All replicas share one host here: Latency ranks hosts, not nodes, so it sees a tie; CpuUsage reads CPU from heartbeats (every 5 s)."
				]
			};
		} finally {
			await Promise.all(systems.map(s => s.stop()));
		}
	}
};

function table(cells: CellPlan[], results: SuiteResult["cells"]): Table {
	return {
		title: `6b. Lattice balancing strategies, ${REPLICAS} server replicas, small payload (median; busiest replica's share of calls)`,
		columns: ["strategy", ...cells.flatMap(({ cell }) => [`${cell} calls/s`, "p99", "busiest"])],
		rows: STRATEGIES.map(strategy => [
			strategy,
			...cells.flatMap(({ cell }) => {
				const m = medianOf(results, cell, strategy);
				return [fmtInt(m.rate), fmtMs(m.p99), fmtPercent(m.topReplicaShare)];
			})
		])
	};
}
