import { parseArgs } from "node:util";
import type { ServiceBroker } from "moleculer";
import { DEFAULT_LOAD_SHEDDING } from "../../middlewares/load-shedding.middleware.ts";
import {
	createBroker,
	sleep,
	startLoad,
	startNatsServer,
	startNode,
	uniqueNamespace,
	waitFor,
	type LoadReport
} from "../support/index.ts";

/**
 * Overload bench: what a node does when offered twice what it can serve.
 *
 *   npm exec -- node test/bench/overload.bench.ts [--seconds 15] [--slots 4] [--hold-ms 10] [--overload 2]
 *
 * The server is one Lattice node whose action sits in front of a fixed-capacity dependency (`slots` calls at once,
 * `hold-ms` each: slots / hold-ms calls per ms). The client in this process offers an open-loop load (calls start
 * on schedule whatever the answers do; latency counts from the scheduled time), first at half the capacity, then
 * at `overload` times it, against four configurations of the same node. Everything runs on a private nats-server.
 */

const { values } = parseArgs({
	options: {
		seconds: { type: "string", default: "15" },
		slots: { type: "string", default: "4" },
		"hold-ms": { type: "string", default: "10" },
		overload: { type: "string", default: "2" }
	}
});
const seconds = Number(values.seconds);
const slots = Number(values.slots);
const holdMs = Number(values["hold-ms"]);
const overload = Number(values.overload);
const capacity = Math.round((slots * 1000) / holdMs);

const CONFIGS: { name: string; env: Record<string, string> }[] = [
	{ name: "no protection (bulkhead and shedding off)", env: { LATTICE_CONCURRENCY_LIMIT: "0", MOL_BULKHEAD__ENABLED: "false" } },
	{ name: "bulkhead only (presets 64/512, shedding off)", env: { LATTICE_CONCURRENCY_LIMIT: "0" } },
	{
		name: `shedding defaults (${DEFAULT_LOAD_SHEDDING.concurrency}/${DEFAULT_LOAD_SHEDDING.maxQueue}/${DEFAULT_LOAD_SHEDDING.maxQueueTime} ms)`,
		env: {}
	},
	{
		name: `shedding sized to the dependency (${slots}/${slots * 4}/${DEFAULT_LOAD_SHEDDING.maxQueueTime} ms)`,
		env: { LATTICE_CONCURRENCY_LIMIT: String(slots), LATTICE_QUEUE_LIMIT: String(slots * 4) }
	}
];

const out = (s: string) => process.stdout.write(s);
const ms = (v: number) => (v >= 100 ? `${Math.round(v)}` : v.toFixed(1));

function row(config: string, rate: number, r: LoadReport): string {
	const okLatencies = r.records.filter(c => c.ok).map(c => c.end - c.start);
	const refused = r.records.filter(c => !c.ok).map(c => c.end - c.start).sort((a, b) => a - b);
	const p99Refused = refused.length ? refused[Math.ceil(refused.length * 0.99) - 1]! : 0;
	const errors = Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
	const okPerSec = Math.round(okLatencies.length / (r.durationMs / 1000));
	return `| ${config} | ${rate} | ${okPerSec} | ${errors} | ${ms(r.okLatency.p50)} | ${ms(r.okLatency.p99)} | ${refused.length ? ms(p99Refused) : "–"} | ${ms(r.latency.max)} |\n`;
}

async function measure(client: ServiceBroker, rate: number, durationS: number): Promise<LoadReport> {
	const load = startLoad({ rate, concurrency: 0, call: () => client.call("capacity.use") });
	await sleep(durationS * 1000);
	return load.stop();
}

async function main(): Promise<void> {
	const nats = await startNatsServer();
	out(`Overload bench: dependency capacity ${capacity} calls/s (${slots} slots × ${holdMs} ms), ${overload}× = ${capacity * overload} calls/s for ${seconds} s\n\n`);
	out("| node configuration | offered/s | ok/s | refused or failed | p50 ok ms | p99 ok ms | p99 refused ms | max ms |\n");
	out("|---|---|---|---|---|---|---|---|\n");
	try {
		for (const config of CONFIGS) {
			const env = { TRANSPORTER: nats.url, NAMESPACE: uniqueNamespace("overload"), CACHER: "none" };
			const server = await startNode({
				nodeID: "server",
				services: "test/chaos/fixtures/capacity.service.ts",
				env: { ...env, ...config.env, CAPACITY_SLOTS: String(slots), CAPACITY_HOLD_MS: String(holdMs) }
			});
			const client = await createBroker({ ...env, NODEID: "client", LOGLEVEL: "error" });
			try {
				await waitFor(() => client.registry.getServiceList({ onlyAvailable: true }).some(s => s.name === "capacity"), 15_000, "server");
				out(row(config.name, Math.round(capacity / 2), await measure(client, Math.round(capacity / 2), 5)));
				out(row(config.name, capacity * overload, await measure(client, capacity * overload, seconds)));
			} finally {
				await client.stop();
				await server.stop();
			}
			// Let the machine settle between configurations.
			await sleep(1000);
		}
	} finally {
		await nats.destroy();
	}
}

main().catch(err => {
	process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
	process.exit(1);
});
