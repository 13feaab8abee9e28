import { fork, type ChildProcess } from "node:child_process";
import http from "node:http";
import os from "node:os";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ServiceBroker, type BrokerOptions, type Middleware } from "moleculer";
import { buildConfig } from "../../moleculer.config.ts";
import { NATS_URL, TEST_CLUSTER_KEY, TEST_JWT_SECRET, uniqueNamespace } from "../support/cluster.ts";
import { waitFor } from "../support/processes.ts";
import { median } from "./stats.ts";
import { watchProcessStats, type ProcessStats } from "./process-stats.ts";

/**
 * What tracing and metrics cost: calls/s of the same trivial action with metrics on and off, and tracing off,
 * ids only (Lattice's default without an exporter), sampled at 10 % and at 100 % and exported over OTLP/HTTP to
 * a sink in a process of its own, as a collector would be. Every variant is measured in the same run, interleaved
 * round by round, on two paths: a remote call over NATS (server in a child process, client here) and a local call
 * in one broker. The broker is Lattice's full config; only the two middlewares change. Moleculer's own tracer at
 * 10 % (no exporter) is a reference row on the local path.
 *
 * Each variant first runs unmeasured for --warmup-ms: V8 keeps optimizing these paths for seconds, and a short
 * warm-up leaves the first rounds measuring the JIT rather than the middlewares.
 *
 *   npm exec -- node test/bench/tracing.bench.ts [--rounds 5] [--cell-ms 2000] [--warmup-ms 3000] [--concurrency 32] [--target]
 */

type Tracing = "off" | "ids" | "10%" | "100%";

interface Variant {
	name: string;
	metrics: boolean;
	tracing: Tracing;
	/** Local path only: Moleculer's built-in tracer instead of Lattice's. */
	moleculerTracer?: boolean;
}

const VARIANTS: Variant[] = [
	{ name: "metrics off, tracing off", metrics: false, tracing: "off" },
	{ name: "metrics on,  tracing off", metrics: true, tracing: "off" },
	{ name: "metrics on,  trace ids only", metrics: true, tracing: "ids" },
	{ name: "metrics off, tracing 10%", metrics: false, tracing: "10%" },
	{ name: "metrics on,  tracing 10%", metrics: true, tracing: "10%" },
	{ name: "metrics off, tracing 100%", metrics: false, tracing: "100%" },
	{ name: "metrics on,  tracing 100%", metrics: true, tracing: "100%" }
];
const REFERENCE: Variant = { name: "Moleculer tracer 10% (ref.)", metrics: false, tracing: "off", moleculerTracer: true };

const BASELINE = VARIANTS[0]!;
const TARGET = VARIANTS[4]!;

function brokerOptions(v: Variant, nodeID: string, namespace: string, sink: string, transporter: string | null): BrokerOptions {
	const env: Record<string, string> = {
		NODE_ENV: "production",
		LOGLEVEL: "warn",
		NODEID: nodeID,
		NAMESPACE: namespace,
		CACHER: "none",
		LATTICE_OPS_PORT: "0",
		PORT: "0",
		LATTICE_CLUSTER_KEY: TEST_CLUSTER_KEY,
		LATTICE_JWT_SECRET: TEST_JWT_SECRET,
		OTEL_BSP_SCHEDULE_DELAY: "1000"
	};
	if (transporter) env.TRANSPORTER = transporter;
	if (v.tracing === "10%" || v.tracing === "100%") {
		env.OTEL_EXPORTER_OTLP_ENDPOINT = sink;
		env.OTEL_TRACES_SAMPLER = "parentbased_traceidratio";
		env.OTEL_TRACES_SAMPLER_ARG = v.tracing === "10%" ? "0.1" : "1";
	}
	const config = buildConfig(env);
	const drop = new Set<string>();
	if (!v.metrics) drop.add("LatticeMetrics");
	if (v.tracing === "off") drop.add("LatticeTracing");
	const middlewares = (config.middlewares ?? []).filter(m => typeof m === "string" || !drop.has((m as { name?: string }).name ?? ""));
	const options: BrokerOptions = { ...config, middlewares: middlewares as Middleware[] };
	if (v.moleculerTracer) options.tracing = { enabled: true, sampling: { rate: 0.1 }, events: true };
	return options;
}

const service = { name: "bench", actions: { echo: { public: true, handler: (ctx: { params: unknown }) => ctx.params } } };
const PARAMS = { id: 42, name: "Espresso beans", qty: 2 };

interface Cell {
	callsPerS: number;
	seconds: number;
	/** CPU of every process involved (this one and, remote, the server), per call. */
	cpuUsPerCall: number;
	/** Remote only, per call: the server process's CPU, and of it the server's main thread (V8's helper threads and
	 * libuv's pool are the rest). What is left of cpuUsPerCall is the client's. */
	serverUsPerCall?: number;
	serverMainUsPerCall?: number;
	/** Remote only: the server's mark-compacts during the cell. */
	serverMajorGcs?: number;
	/** Remote only: NATS messages the server sent and received, per call (1 each without batching). */
	serverMsgsPerCall?: number;
}

/** Closed loop: `concurrency` callers each call again as soon as their previous call answers. */
async function closedLoop(broker: ServiceBroker, concurrency: number, ms: number, server?: ServerChild): Promise<Cell> {
	let calls = 0;
	const deadline = performance.now() + ms;
	const worker = async () => {
		while (performance.now() < deadline) {
			await broker.call("bench.echo", PARAMS);
			calls++;
		}
	};
	const server0 = await server?.cpu();
	const client0 = cpuMicros();
	const start = performance.now();
	await Promise.all(Array.from({ length: concurrency }, worker));
	const elapsed = performance.now() - start;
	const client = cpuMicros() - client0;
	const server1 = await server?.cpu();
	const cell: Cell = { callsPerS: (calls * 1000) / elapsed, seconds: elapsed / 1000, cpuUsPerCall: client / calls };
	if (server0 && server1) {
		cell.serverUsPerCall = (server1.cpuUs - server0.cpuUs) / calls;
		cell.serverMainUsPerCall = (server1.mainThreadUs - server0.mainThreadUs) / calls;
		cell.serverMajorGcs = server1.majorGcs - server0.majorGcs;
		cell.serverMsgsPerCall = (server1.msgs - server0.msgs) / calls;
		cell.cpuUsPerCall += cell.serverUsPerCall;
	}
	return cell;
}

/**
 * The collector: accepts OTLP/HTTP posts and throws the bodies away. It runs in a process of its own, as a collector
 * does, so the CPU it spends receiving spans is not counted as the traced nodes' (it still shares the machine's cores).
 */
function sinkRole(): void {
	let bytes = 0;
	const server = http.createServer((req, res) => {
		req.on("data", (b: Buffer) => (bytes += b.length));
		req.on("end", () => {
			// An empty export response, in the request's encoding (protobuf unless a variant asks for JSON).
			const protobuf = /protobuf/.test(req.headers["content-type"] ?? "");
			res.writeHead(200, { "content-type": protobuf ? "application/x-protobuf" : "application/json" });
			res.end(protobuf ? undefined : "{}");
		});
	});
	server.listen(0, "127.0.0.1", () => process.send!(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
	process.on("message", m => {
		if (m === "bytes") process.send!(bytes);
		else server.close(() => process.exit(0));
	});
	process.on("disconnect", () => process.exit(0));
}

/** A child process running this file in another role: `ask` sends a word and reads what it answers. */
interface Child {
	/** The child's first message (sent once it is ready). */
	ready: Promise<unknown>;
	ask<T>(word: string): Promise<T>;
	stop(): Promise<void>;
}

function forkRole(args: string[], what: string): Child {
	const proc: ChildProcess = fork(fileURLToPath(import.meta.url), args, { execPath: process.execPath, stdio: ["ignore", "inherit", "inherit", "ipc"] });
	return {
		ready: new Promise((resolve, reject) => {
			proc.once("message", resolve);
			proc.once("exit", code => reject(new Error(`${what} exited with ${code}`)));
		}),
		ask: word =>
			new Promise(r => {
				proc.once("message", m => r(m as never));
				proc.send(word);
			}),
		stop: () =>
			new Promise(r => {
				proc.once("exit", () => r());
				proc.send("stop");
			})
	};
}

async function startSink(): Promise<{ url: string; bytes: () => Promise<number>; close(): Promise<void> }> {
	const child = forkRole(["--sink"], "OTLP sink");
	const url = String(await child.ready);
	return { url, bytes: () => child.ask<number>("bytes"), close: () => child.stop() };
}

interface ServerChild {
	/** What the server process has spent so far, and the NATS messages it has sent and received. */
	cpu(): Promise<ProcessStats & { msgs: number }>;
	stop(): Promise<void>;
}

async function startServer(v: Variant, nodeID: string, namespace: string, sink: string): Promise<ServerChild> {
	const child = forkRole(["--server", JSON.stringify({ v, nodeID, namespace, sink })], `server for '${v.name}'`);
	await child.ready;
	return { cpu: () => child.ask("stats"), stop: () => child.stop() };
}

function cpuMicros(): number {
	const u = process.cpuUsage();
	return u.user + u.system;
}

async function serverRole(arg: { v: Variant; nodeID: string; namespace: string; sink: string }): Promise<void> {
	const broker = new ServiceBroker(brokerOptions(arg.v, arg.nodeID, arg.namespace, arg.sink, NATS_URL));
	broker.createService(service);
	await broker.start();
	const stats = watchProcessStats();
	const nats = (broker.transit!.tx as unknown as { client: { stats(): { inMsgs: number; outMsgs: number } } }).client;
	process.send!("ready");
	process.on("message", async m => {
		if (m === "stats") {
			const { inMsgs, outMsgs } = nats.stats();
			return process.send!({ ...stats(), msgs: inMsgs + outMsgs });
		}
		await broker.stop();
		process.exit(0);
	});
}

/** A ratio to the baseline as a signed percentage. */
function pct(ratio: number): string {
	const d = (ratio - 1) * 100;
	return `${d >= 0 ? "+" : ""}${d.toFixed(1)} %`;
}

/**
 * Medians, and each variant against the baseline as the median of per-round ratios: a round measures every
 * variant within seconds, so a burst of other work on the machine skews a round's ratios less than its raw figures.
 */
function printTable(title: string, rows: Array<[string, Cell[]]>): { calls: Map<string, number>; cpu: Map<string, number> } {
	const base = rows.find(([name]) => name === BASELINE.name)![1];
	const ratio = (cells: Cell[], pick: (c: Cell) => number) => median(cells.map((c, i) => pick(c) / pick(base[i]!)));
	const calls = new Map(rows.map(([name, cells]) => [name, ratio(cells, c => c.callsPerS)]));
	const cpu = new Map(rows.map(([name, cells]) => [name, ratio(cells, c => c.cpuUsPerCall)]));
	process.stdout.write(`\n${title}\n`);
	process.stdout.write(
		`  ${"variant".padEnd(30)} ${"calls/s".padStart(9)} ${"vs off/off".padStart(10)} ${"CPU µs/call".padStart(12)} ${"vs off/off".padStart(10)}  calls/s per round\n`
	);
	for (const [name, cells] of rows) {
		const each = cells.map(x => Math.round(x.callsPerS)).join(" ");
		process.stdout.write(
			`  ${name.padEnd(30)} ${Math.round(median(cells.map(c => c.callsPerS))).toString().padStart(9)} ${pct(calls.get(name)!).padStart(10)}` +
				` ${median(cells.map(c => c.cpuUsPerCall)).toFixed(1).padStart(12)} ${pct(cpu.get(name)!).padStart(10)}  ${each}\n`
		);
	}
	if (base[0]?.serverUsPerCall !== undefined) {
		process.stdout.write(`  CPU µs per call, medians: ${"client".padStart(8)} ${"server".padStart(8)} ${"of it main thread".padStart(18)} ${"mark-compacts/s".padStart(16)} ${"NATS msgs/call".padStart(15)}\n`);
		for (const [name, cells] of rows) {
			const m = (pick: (c: Cell) => number) => median(cells.map(pick)).toFixed(1);
			process.stdout.write(
				`  ${name.padEnd(30)} ${m(c => c.cpuUsPerCall - c.serverUsPerCall!).padStart(8)} ${m(c => c.serverUsPerCall!).padStart(8)} ${m(c => c.serverMainUsPerCall!).padStart(18)} ${m(c => c.serverMajorGcs! / c.seconds).padStart(16)} ${median(cells.map(c => c.serverMsgsPerCall!)).toFixed(3).padStart(15)}\n`
			);
		}
	}
	return { calls, cpu };
}

async function main(): Promise<void> {
	const { values } = parseArgs({
		options: { rounds: { type: "string" }, "cell-ms": { type: "string" }, "warmup-ms": { type: "string" }, concurrency: { type: "string" }, target: { type: "boolean" } },
		strict: true
	});
	const rounds = Number(values.rounds ?? 5);
	const cellMs = Number(values["cell-ms"] ?? 2000);
	const warmupMs = Number(values["warmup-ms"] ?? 3000);
	const concurrency = Number(values.concurrency ?? 32);
	// --target: only the two variants the cost target compares, so more rounds fit in the same time.
	const variants = values.target ? [BASELINE, TARGET] : VARIANTS;
	const localVariants = values.target ? variants : [...VARIANTS, REFERENCE];
	const sink = await startSink();
	process.stdout.write(`tracing bench: ${warmupMs} ms warm-up, ${rounds} rounds of ${cellMs} ms cells, ${concurrency} calls in flight, NATS ${NATS_URL}\n`);

	// Remote: one server process and one client broker per variant, each pair in its own namespace.
	const remote: Array<{ v: Variant; client: ServiceBroker; server: ServerChild; results: Cell[] }> = [];
	try {
		for (const [i, v] of variants.entries()) {
			const namespace = uniqueNamespace(`bench-tr${i}`);
			const server = await startServer(v, `server-${i}`, namespace, sink.url);
			const client = new ServiceBroker(brokerOptions(v, `client-${i}`, namespace, sink.url, NATS_URL));
			await client.start();
			await waitFor(() => client.registry.getActionEndpoints("bench.echo")?.hasAvailable(), 15_000, "bench.echo");
			remote.push({ v, client, server, results: [] });
		}
		for (const r of remote) await closedLoop(r.client, concurrency, warmupMs);
		for (let round = 0; round < rounds; round++) {
			// Rotate the order so no variant always runs first (warmest JIT, coolest CPU).
			for (let k = 0; k < remote.length; k++) {
				const r = remote[(k + round) % remote.length]!;
				r.results.push(await closedLoop(r.client, concurrency, cellMs, r.server));
			}
			process.stdout.write(`  remote round ${round + 1}/${rounds} done\n`);
		}
	} finally {
		await Promise.all(remote.map(r => Promise.all([r.client.stop(), r.server.stop()])));
	}
	const remoteMedians = printTable(`Remote call over NATS (client → server process), ${concurrency} in flight`, remote.map(r => [r.v.name, r.results]));

	// Local: one broker per variant in this process, the action on the same broker.
	const local: Array<{ v: Variant; broker: ServiceBroker; results: Cell[] }> = [];
	try {
		for (const [i, v] of localVariants.entries()) {
			const broker = new ServiceBroker(brokerOptions(v, `local-${i}`, uniqueNamespace("bench-local"), sink.url, null));
			broker.createService(service);
			await broker.start();
			local.push({ v, broker, results: [] });
		}
		for (const l of local) await closedLoop(l.broker, concurrency, warmupMs);
		for (let round = 0; round < rounds; round++) {
			for (let k = 0; k < local.length; k++) {
				const l = local[(k + round) % local.length]!;
				l.results.push(await closedLoop(l.broker, concurrency, cellMs));
			}
			process.stdout.write(`  local round ${round + 1}/${rounds} done\n`);
		}
	} finally {
		await Promise.all(local.map(l => l.broker.stop()));
	}
	printTable(`Local call (one broker), ${concurrency} in flight`, local.map(l => [l.v.name, l.results]));

	// Closed-loop throughput on a saturated machine is cores ÷ CPU per call, so the CPU figure predicts the
	// calls/s loss and is moved less than calls/s by other work running on the machine at the same time.
	const callsLoss = (1 - remoteMedians.calls.get(TARGET.name)!) * 100;
	const cpuRatio = remoteMedians.cpu.get(TARGET.name)!;
	const predicted = (1 - 1 / cpuRatio) * 100;
	process.stdout.write(
		`\nTarget (remote): '${TARGET.name}' ≤ 10 % fewer calls/s than '${BASELINE.name}'\n` +
			`  measured: ${callsLoss.toFixed(2)} % fewer calls/s → ${callsLoss <= 10 ? "met" : "NOT met"}\n` +
			`  from CPU per call (${pct(cpuRatio)}): ${predicted.toFixed(2)} % fewer calls/s → ${predicted <= 10 ? "met" : "NOT met"}\n` +
			`  load average now: ${os.loadavg().map(n => n.toFixed(2)).join(" ")} (other work on the machine makes calls/s noisy)\n` +
			`OTLP bytes received by the sink: ${await sink.bytes()}\n`
	);
	await sink.close();
}

if (process.argv[2] === "--server") await serverRole(JSON.parse(process.argv[3]!));
else if (process.argv[2] === "--sink") sinkRole();
else await main();
