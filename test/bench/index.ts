import { mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { machineInfo } from "./machine.ts";
import { parseOptions, type BenchOptions, type SuiteName } from "./options.ts";
import { cacheSuite } from "./suites/cache.suite.ts";
import { coldStartSuite } from "./suites/coldstart.suite.ts";
import { gatewaySuite } from "./suites/gateway.suite.ts";
import { overheadSuite } from "./suites/overhead.suite.ts";
import { remoteSuite } from "./suites/remote.suite.ts";
import { serializerSuite } from "./suites/serializer.suite.ts";
import { strategySuite } from "./suites/strategy.suite.ts";
import type { Suite, SuiteResult } from "./suites/suite.ts";
import { renderTable } from "./table.ts";

/**
 * `npm run bench`: Lattice against bare Moleculer 0.15 on this machine's NATS and Redis. Every server, client and
 * gateway is its own process; systems are measured in interleaved rounds and the tables show medians.
 */
const SUITES: Record<SuiteName, Suite> = {
	remote: remoteSuite,
	cache: cacheSuite,
	serializer: serializerSuite,
	strategy: strategySuite,
	gateway: gatewaySuite,
	coldstart: coldStartSuite,
	overhead: overheadSuite
};

const out = (text: string) => process.stdout.write(text);

function reachable(url: string): Promise<boolean> {
	const { hostname, port } = new URL(url);
	return new Promise(resolve => {
		const s = net.connect(Number(port), hostname);
		s.setTimeout(2000, () => s.destroy());
		s.once("connect", () => {
			s.destroy();
			resolve(true);
		});
		s.once("error", () => resolve(false));
		s.once("close", () => resolve(false));
	});
}

async function checkServices(options: BenchOptions): Promise<void> {
	if (!(await reachable(options.natsUrl))) throw new Error(`NATS is not reachable at ${options.natsUrl}`);
	if (options.suites.includes("cache") && !(await reachable(options.redisUrl))) {
		throw new Error(`Redis is not reachable at ${options.redisUrl}`);
	}
}

async function main(): Promise<void> {
	const options = parseOptions(process.argv.slice(2));
	await checkServices(options);
	const machine = machineInfo();
	const started = Date.now();
	out(
		`Lattice bench: ${machine.cores} cores (${machine.cpu}), Node ${machine.node}, Moleculer ${machine.moleculer}, ` +
			`${options.rounds} rounds of ${options.cellMs} ms cells${options.quick ? " (quick)" : ""}\n`
	);

	const load = os.loadavg()[0]!;
	if (load > machine.cores / 4) {
		out(`WARNING: load average ${load.toFixed(2)} before the run: something else is using the CPU, figures will be noisy.\n`);
	}

	const results: Array<SuiteResult & { loadavg: { before: number[]; after: number[] } }> = [];
	for (const name of options.suites) {
		// Other work on the machine skews every figure: the load average around each suite says how much there was.
		const before = os.loadavg();
		out(`\n== ${name} (load average ${before.map(n => n.toFixed(2)).join(" ")})\n`);
		const result = await SUITES[name].run({ options, progress: out });
		results.push({ ...result, loadavg: { before, after: os.loadavg() } });
		for (const t of result.tables) out(renderTable(t));
		for (const n of result.notes) out(`  note: ${n}\n`);
	}

	const elapsedS = Math.round((Date.now() - started) / 1000);
	mkdirSync(path.dirname(options.out), { recursive: true });
	writeFileSync(
		options.out,
		JSON.stringify({ date: new Date().toISOString(), elapsedS, machine, options, suites: results }, null, "\t") + "\n"
	);
	out(`\nDone in ${elapsedS} s. Results: ${path.relative(process.cwd(), options.out)}\n`);
}

main().then(
	() => process.exit(0),
	(err: unknown) => {
		process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
		process.exit(1);
	}
);
