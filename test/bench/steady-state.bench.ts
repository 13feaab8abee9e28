import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ServiceBroker } from "moleculer";
import { NATS_URL, uniqueNamespace } from "../support/cluster.ts";
import { KIB_PAYLOAD, SMALL_PAYLOAD } from "./payloads.ts";
import { benchService } from "./roles/bench.service.ts";
import { brokerOptions } from "./systems.ts";
import { watchProcessStats, type ProcessStats } from "./process-stats.ts";
import { BROKER_OPTION_FEATURES, type BrokerSpec, type LatticeFeature } from "./protocol.ts";

/**
 * Long closed-loop runs, one system at a time, reporting what a 2 s interleaved cell cannot show: where the CPU
 * goes (client, server, and the server's main thread apart from V8's helper threads) and how the server's garbage
 * collector behaves in steady state. It found Lattice's batching sometimes tipping the server into promoting
 * every call's objects and running a mark-compact every few hundred ms (see the Map note in
 * middlewares/packet-batching.middleware.ts): a regime that came and went between runs of the same code.
 *
 *   npm exec -- node test/bench/steady-state.bench.ts [--systems lattice,bare,lattice-PacketBatching] [--payload small|1KiB]
 *     [--seconds 8] [--warmup 2] [--concurrency 16] [--repeat 2]
 *
 * A system is `lattice`, `bare`, or `lattice` followed by `-Feature` for each thing to switch off (a middleware name
 * or a broker option, as in --only overhead).
 */

function specOf(system: string, namespace: string, role: string): BrokerSpec {
	const [kind, ...off] = system.split("-");
	if (kind !== "lattice" && kind !== "bare") throw new Error(`unknown system '${system}'`);
	const options = new Set<string>(BROKER_OPTION_FEATURES);
	const without = off.map(f => (options.has(f) ? f : `middleware:${f}`) as LatticeFeature);
	return { kind, namespace, nodeID: `${namespace}-${role}`, transporter: NATS_URL, without };
}

/** The server role: the bench service, and its own CPU and GC counters on request. */
async function serverRole(system: string, namespace: string): Promise<void> {
	const broker = new ServiceBroker(brokerOptions(specOf(system, namespace, "server")));
	broker.createService(benchService({ count: 0 }));
	await broker.start();
	const stats = watchProcessStats();
	process.on("message", async (m: string) => {
		if (m === "stats") process.send!(stats());
		else {
			await broker.stop();
			process.exit(0);
		}
	});
	process.on("disconnect", () => process.exit(0));
	process.send!("ready");
}

function ask(child: ChildProcess): Promise<ProcessStats> {
	return new Promise(resolve => {
		child.once("message", m => resolve(m as ProcessStats));
		child.send("stats");
	});
}

async function run(system: string, payload: unknown, o: { seconds: number; warmup: number; concurrency: number }): Promise<string> {
	const namespace = uniqueNamespace("steady");
	const child = fork(fileURLToPath(import.meta.url), ["--server", system, namespace], { execPath: process.execPath });
	await new Promise((resolve, reject) => {
		child.once("message", resolve);
		child.once("exit", code => reject(new Error(`${system} server exited with ${code}`)));
	});
	const client = new ServiceBroker(brokerOptions(specOf(system, namespace, "client")));
	try {
		await client.start();
		await client.waitForServices("bench", 10_000);
		let calls = 0;
		let stopAt = 0;
		const loop = async () => {
			while (performance.now() < stopAt) {
				await client.call("bench.echo", payload);
				calls++;
			}
		};
		const phase = async (seconds: number) => {
			stopAt = performance.now() + seconds * 1000;
			await Promise.all(Array.from({ length: o.concurrency }, loop));
		};
		await phase(o.warmup);
		calls = 0;
		const s0 = await ask(child);
		const c0 = process.cpuUsage();
		const t0 = performance.now();
		await phase(o.seconds);
		const elapsed = (performance.now() - t0) / 1000;
		const c = process.cpuUsage(c0);
		const s1 = await ask(child);
		const per = (us: number) => (us / calls).toFixed(1).padStart(6);
		return (
			`${system.padEnd(34)} ${Math.round(calls / elapsed).toLocaleString("en").padStart(9)}  ${per(c.user + c.system)}  ${per(s1.cpuUs - s0.cpuUs)}` +
			`  ${per(s1.mainThreadUs - s0.mainThreadUs)}  ${String(s1.minorGcs - s0.minorGcs).padStart(6)}  ${String(s1.majorGcs - s0.majorGcs).padStart(6)}` +
			`  ${((s1.gcMs - s0.gcMs) / o.seconds).toFixed(1).padStart(7)}`
		);
	} finally {
		await client.stop();
		child.send("stop");
		await new Promise(resolve => child.once("exit", resolve));
	}
}

if (process.argv[2] === "--server") await serverRole(process.argv[3]!, process.argv[4]!);
else {
	const { values } = parseArgs({
		options: {
			systems: { type: "string", default: "lattice,bare" },
			payload: { type: "string", default: "small" },
			seconds: { type: "string", default: "8" },
			warmup: { type: "string", default: "2" },
			concurrency: { type: "string", default: "16" },
			repeat: { type: "string", default: "2" }
		}
	});
	const payload = values.payload === "1KiB" ? KIB_PAYLOAD : SMALL_PAYLOAD;
	const o = { seconds: Number(values.seconds), warmup: Number(values.warmup), concurrency: Number(values.concurrency) };
	process.stdout.write(
		`steady state: ${values.payload} payload, ${o.concurrency} in flight, ${o.seconds} s after ${o.warmup} s of warm-up, NATS ${NATS_URL}\n` +
			`${"system".padEnd(34)} ${"calls/s".padStart(9)}  client  server  s.main  minorGC  majorGC  GC ms/s\n`
	);
	for (let r = 0; r < Number(values.repeat); r++) {
		for (const system of values.systems.split(",")) process.stdout.write(`${await run(system.trim(), payload, o)}\n`);
	}
	process.stdout.write("client, server, s.main: CPU µs per call (s.main: the server's main thread alone); GC counts and pause time are the server's.\n");
}
