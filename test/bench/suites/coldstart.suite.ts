import { execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { metricValue, RUNNER, startNode, uniqueNamespace } from "../../support/cluster.ts";
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
	/** V8 heap in use (MiB), where the node reports it (Lattice's /metrics). */
	heapUsedMiB(): Promise<number | undefined>;
}

interface Kind {
	system: string;
	start(natsUrl: string): Promise<Started>;
}

function latticeNode(system: string, services: string, gateway: boolean, env: Record<string, string>): Kind {
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
				env: { ...env, TRANSPORTER: natsUrl, NAMESPACE: namespace }
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
			return {
				process: node,
				readyMs: performance.now() - t0,
				cpuMs: cpuMs(node.pid),
				heapUsedMiB: async () => metricValue(await node.metrics(), "nodejs_heap_size_used_bytes") / 1_048_576
			};
		}
	};
}

/**
 * Stock Moleculer's runner, ready when its broker has started: with the same products service, and with no
 * service at all, which is the floor any Moleculer 0.15 node on NATS starts from on this Node.
 */
function bareNode(system: string, services: string | null): Kind {
	return {
		system,
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
					...(services ? { SERVICES: services } : {})
				},
				stdio: ["ignore", "pipe", "pipe"]
			});
			const managed = manage(child);
			await waitFor(
				() => {
					if (!managed.alive()) throw new Error(`${system} exited:\n${managed.output.join("")}`);
					return managed.output.some(chunk => chunk.includes("BENCH-READY"));
				},
				READY_TIMEOUT_MS,
				`${system} ready`,
				POLL_MS
			);
			return { process: managed, readyMs: performance.now() - t0, cpuMs: cpuMs(managed.pid), heapUsedMiB: async () => undefined };
		}
	};
}

/**
 * The compile cache the image ships (Dockerfile: `node lib/compile-cache.cli.ts`), made afresh for this run from
 * the current sources, so Lattice nodes start as a container of this image does.
 */
function makeCompileCache(): { dir: string; dispose(): void } {
	const dir = mkdtempSync(path.join(os.tmpdir(), "lattice-bench-compile-cache-"));
	execFileSync(process.execPath, ["lib/compile-cache.cli.ts", dir], { cwd: ROOT, stdio: "pipe" });
	return {
		dir,
		dispose() {
			// The tool leaves the cache read-only.
			const writable = (p: string) => {
				chmodSync(p, 0o755);
				for (const e of readdirSync(p, { withFileTypes: true })) if (e.isDirectory()) writable(path.join(p, e.name));
			};
			writable(dir);
			rmSync(dir, { recursive: true, force: true });
		}
	};
}

/** NODE_OPTIONS of the edge Lattice pods as k8s/edge-site ships them, so the edge row runs what ships. */
function edgeNodeOptions(): string {
	const deployment = parseYaml(readFileSync(path.join(ROOT, "k8s/edge-site/lattice-edge.yaml"), "utf8")) as {
		spec: { template: { spec: { containers: { env?: { name: string; value?: string }[] }[] } } };
	};
	const value = deployment.spec.template.spec.containers[0]!.env?.find(e => e.name === "NODE_OPTIONS")?.value;
	if (!value) throw new Error("k8s/edge-site/lattice-edge.yaml sets no NODE_OPTIONS");
	return value;
}

const IMAGE = "Lattice: products (image)";
const IMAGE_GATEWAY = "Lattice: api + products (image)";
const EDGE = "Lattice: products (image, edge pod)";
const NO_CACHE = "Lattice: products (npm start)";
const BARE = "bare: products";
const BARE_EMPTY = "bare: no services";
const SYSTEMS = [IMAGE_GATEWAY, IMAGE, EDGE, NO_CACHE, BARE, BARE_EMPTY];

function kinds(compileCache: string): Kind[] {
	const image = { NODE_COMPILE_CACHE: compileCache };
	return [
		latticeNode(IMAGE_GATEWAY, "api,products", true, image),
		latticeNode(IMAGE, "products", false, image),
		latticeNode(EDGE, "products", false, { ...image, NODE_OPTIONS: edgeNodeOptions() }),
		latticeNode(NO_CACHE, "products", false, {}),
		bareNode(BARE, "services/products.service.ts"),
		bareNode(BARE_EMPTY, null)
	];
}

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
 * Item 5: time from spawning a real node (moleculer-runner, as `npm start` and the image do) to ready, and its
 * resident memory once it has idled. Lattice nodes start as the image starts them (compile cache), plus the edge
 * pods' variant and one without the cache. Nodes start one at a time; the ones already up idle meanwhile in their
 * own namespaces.
 */
export const coldStartSuite: Suite = {
	name: "coldstart",
	async run(ctx: SuiteContext): Promise<SuiteResult> {
		const { options } = ctx;
		const compileCache = makeCompileCache();
		const all = kinds(compileCache.dir);
		const cells = new Map<string, CellResult>(
			all.map(k => [k.system, { suite: "coldstart", cell: "node", system: k.system, rounds: [], median: {} }])
		);
		try {
			for (let r = 0; r < options.rounds; r++) {
				const running: Array<{ kind: Kind; started: Started }> = [];
				try {
					for (let k = 0; k < all.length; k++) {
						const kind = all[(k + r) % all.length]!;
						running.push({ kind, started: await kind.start(options.natsUrl) });
					}
					await sleep(options.settleMs);
					for (const { kind, started } of running) {
						const rss = rssMiB(started.process.pid);
						const heap = await started.heapUsedMiB();
						cells.get(kind.system)!.rounds.push({
							readyMs: started.readyMs,
							cpuMs: started.cpuMs,
							rssMiB: rss,
							...(heap === undefined ? {} : { heapMiB: heap })
						});
					}
				} finally {
					await Promise.all(running.map(({ started }) => started.process.stop()));
				}
				ctx.progress(`  coldstart: round ${r + 1}/${options.rounds}\n`);
			}
		} finally {
			compileCache.dispose();
		}
		const results = [...cells.values()];
		for (const c of results) c.median = medianMetrics(c.rounds);
		return { name: "coldstart", cells: results, tables: [table(results, options.settleMs)], notes: [] };
	}
};

function table(results: CellResult[], settleMs: number): Table {
	return {
		title: `5. Cold start to ready and idle RSS after ${settleMs / 1000} s (median of rounds; targets < ${TARGET_READY_MS} ms, < ${TARGET_RSS_MIB} MiB)`,
		columns: ["node", "ready ms", "min–max ms", "CPU ms to ready", "RSS MiB", "min–max MiB", "heap used MiB", "targets met"],
		rows: SYSTEMS.map(system => {
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
				m.heapMiB === undefined ? "" : fmtFixed(m.heapMiB),
				system.startsWith("Lattice") ? (ok ? "yes" : "NO") : ""
			];
		}),
		notes: [
			"Ready: Lattice's /ready answers 200 (polled every 5 ms); bare: its broker's started() hook has run. Bare waits Moleculer's fixed 500 ms for other nodes' INFO after connecting; Lattice until INFO stops arriving (at least LATTICE_DISCOVERY_WAIT, 100 ms).",
			`(image): as the image starts them, with the compile cache made at build time (lib/compile-cache.cli.ts, NODE_COMPILE_CACHE); (npm start): without it; (edge pod): plus the edge pods' NODE_OPTIONS (${edgeNodeOptions()}, from k8s/edge-site). Bare Moleculer runs without a compile cache.`,
			"RSS includes the Node binary's resident pages (~45–50 MiB, shared by every Node process on the host); heap used is V8's after the idle period (Lattice's /metrics).",
			"'bare: no services' is stock Moleculer with nothing loaded, connected to NATS: no node of any Moleculer 0.15 distribution on this Node idles below it.",
			"All nodes connect to the shared NATS; the products service uses moleculer-db's in-memory adapter."
		]
	};
}
