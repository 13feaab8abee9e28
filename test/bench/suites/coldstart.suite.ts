import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { RUNNER, startNode, uniqueNamespace } from "../../support/cluster.ts";
import { manage, ROOT, sleep, waitFor, type ManagedProcess } from "../../support/processes.ts";
import { medianMetrics, type CellResult } from "../interleave.ts";
import { fmtFixed, fmtInt, type Table } from "../table.ts";
import { medianOf, type Suite, type SuiteContext, type SuiteResult } from "./suite.ts";

const READY_TIMEOUT_MS = 20_000;
/** Readiness is polled this often: the resolution of the cold-start figure. */
const POLL_MS = 5;
const TARGET_READY_MS = 1000;
const TARGET_RSS_MIB = 80;

interface Started {
	process: ManagedProcess;
	readyMs: number;
	/** CPU the process had used when it became ready: unlike wall time, barely moved by other load. */
	cpuMs: number;
}

interface Kind {
	system: string;
	start(natsUrl: string): Promise<Started>;
}

function latticeNode(system: string, services: string, gateway: boolean): Kind {
	return {
		system,
		async start(natsUrl) {
			const namespace = uniqueNamespace("bench-cold");
			const t0 = performance.now();
			const node = await startNode({
				nodeID: `${namespace}-node`,
				services,
				gateway,
				waitReady: false,
				env: { TRANSPORTER: natsUrl, NAMESPACE: namespace }
			});
			await waitFor(
				async () => {
					if (!node.alive()) throw new Error(`${system} exited:\n${node.output.join("")}`);
					return node.ready();
				},
				READY_TIMEOUT_MS,
				`${system} ready`,
				POLL_MS
			);
			return { process: node, readyMs: performance.now() - t0, cpuMs: cpuMs(node.pid) };
		}
	};
}

/** Stock Moleculer's runner with the same products service, ready when its broker has started. */
const bareNode: Kind = {
	system: "bare: products",
	async start(natsUrl) {
		const namespace = uniqueNamespace("bench-cold");
		const t0 = performance.now();
		const child = spawn(process.execPath, [RUNNER, "--config", "test/bench/bare-runner.config.ts", "--mask", "**/*.service.ts"], {
			cwd: ROOT,
			env: {
				...process.env,
				TRANSPORTER: natsUrl,
				NAMESPACE: namespace,
				NODEID: `${namespace}-node`,
				SERVICES: "services/products.service.ts"
			},
			stdio: ["ignore", "pipe", "pipe"]
		});
		const managed = manage(child);
		await waitFor(
			() => {
				if (!managed.alive()) throw new Error(`bare node exited:\n${managed.output.join("")}`);
				return managed.output.some(chunk => chunk.includes("BENCH-READY"));
			},
			READY_TIMEOUT_MS,
			"bare node ready",
			POLL_MS
		);
		return { process: managed, readyMs: performance.now() - t0, cpuMs: cpuMs(managed.pid) };
	}
};

const KINDS: Kind[] = [
	latticeNode("Lattice: api + products", "api,products", true),
	latticeNode("Lattice: products", "products", false),
	bareNode
];

/** utime + stime from /proc/<pid>/stat, in ms (Linux counts in 10 ms ticks). */
function cpuMs(pid: number): number {
	const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
	// Fields after the command name, which may itself contain spaces: utime and stime are the 12th and 13th.
	const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
	return (Number(fields[11]) + Number(fields[12])) * 10;
}

function rssMiB(pid: number): number {
	const status = readFileSync(`/proc/${pid}/status`, "utf8");
	const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
	return kb ? Number(kb) / 1024 : Number.NaN;
}

/**
 * Item 5: time from spawning a real node (moleculer-runner, as `npm start` does) to ready, and its resident memory
 * once it has idled. Nodes start one at a time; the ones already up idle meanwhile in their own namespaces.
 */
export const coldStartSuite: Suite = {
	name: "coldstart",
	async run(ctx: SuiteContext): Promise<SuiteResult> {
		const { options } = ctx;
		const cells = new Map<string, CellResult>(
			KINDS.map(k => [k.system, { suite: "coldstart", cell: "node", system: k.system, rounds: [], median: {} }])
		);
		for (let r = 0; r < options.rounds; r++) {
			const running: Array<{ kind: Kind; started: Started }> = [];
			try {
				for (let k = 0; k < KINDS.length; k++) {
					const kind = KINDS[(k + r) % KINDS.length]!;
					running.push({ kind, started: await kind.start(options.natsUrl) });
				}
				await sleep(options.settleMs);
				for (const { kind, started } of running) {
					cells.get(kind.system)!.rounds.push({ readyMs: started.readyMs, cpuMs: started.cpuMs, rssMiB: rssMiB(started.process.pid) });
				}
			} finally {
				await Promise.all(running.map(({ started }) => started.process.stop()));
			}
			ctx.progress(`  coldstart: round ${r + 1}/${options.rounds}\n`);
		}
		const results = [...cells.values()];
		for (const c of results) c.median = medianMetrics(c.rounds);
		return { name: "coldstart", cells: results, tables: [table(results, options.settleMs)], notes: [] };
	}
};

function table(results: CellResult[], settleMs: number): Table {
	return {
		title: `5. Cold start to ready and idle RSS after ${settleMs / 1000} s (median of rounds; targets < ${TARGET_READY_MS} ms, < ${TARGET_RSS_MIB} MiB)`,
		columns: ["node", "ready ms", "min–max ms", "CPU ms to ready", "RSS MiB", "min–max MiB", "targets met"],
		rows: KINDS.map(({ system }) => {
			const c = results.find(x => x.system === system)!;
			const m = medianOf(results, "node", system);
			const ready = c.rounds.map(x => x.readyMs!);
			const rss = c.rounds.map(x => x.rssMiB!);
			const ok = (m.readyMs ?? Infinity) < TARGET_READY_MS && (m.rssMiB ?? Infinity) < TARGET_RSS_MIB;
			return [
				system,
				fmtInt(m.readyMs),
				`${fmtInt(Math.min(...ready))}–${fmtInt(Math.max(...ready))}`,
				fmtInt(m.cpuMs),
				fmtFixed(m.rssMiB),
				`${fmtFixed(Math.min(...rss))}–${fmtFixed(Math.max(...rss))}`,
				system.startsWith("Lattice") ? (ok ? "yes" : "NO") : ""
			];
		}),
		notes: [
			"Ready: Lattice's /ready answers 200 (polled every 5 ms); bare: its broker's started() hook has run.",
			"All nodes connect to the shared NATS; the products service uses moleculer-db's in-memory adapter."
		]
	};
}
