import { uniqueNamespace } from "../support/cluster.ts";
import { startRole, type Role } from "./child.ts";
import type { Metrics } from "./interleave.ts";
import { SMALL_PAYLOAD } from "./payloads.ts";
import type { BrokerSpec, ClosedLoopSpec, LoadResult, OpenLoopSpec, ServerStats } from "./protocol.ts";

/** One benchmarked system on the shared NATS: server replicas and a client, each its own process. */
export interface RemoteSystem {
	readonly name: string;
	readonly client: Role;
	readonly servers: Role[];
	stop(): Promise<void>;
}

export type SystemSpec = Omit<BrokerSpec, "namespace" | "nodeID">;

/** Starts the servers, then the client, and waits until the client sees every replica. */
export async function startRemoteSystem(name: string, spec: SystemSpec, replicas = 1): Promise<RemoteSystem> {
	const namespace = uniqueNamespace(`bench-${name.replace(/\W+/g, "-")}`);
	const servers = await Promise.all(
		Array.from({ length: replicas }, (_, i) => startRole("server", { ...spec, namespace, nodeID: `${namespace}-server-${i}` }))
	);
	const client = await startRole("client", { ...spec, namespace, nodeID: `${namespace}-client` });
	await client.request("endpoints", { action: "bench.echo", count: replicas });
	return {
		name,
		client,
		servers,
		async stop() {
			await Promise.all([client, ...servers].map(r => r.stop()));
		}
	};
}

function serverStats(system: RemoteSystem): Promise<ServerStats[]> {
	return Promise.all(system.servers.map(s => s.request("stats", null)));
}

/**
 * Runs one load on a system's client and returns its figures with the servers' share: server CPU per handled call
 * (warm-up included on both sides of the division) and the busiest replica's share of the calls.
 */
export async function measure(
	system: RemoteSystem,
	load: { closed: ClosedLoopSpec } | { open: OpenLoopSpec }
): Promise<Metrics> {
	const before = await serverStats(system);
	const r: LoadResult =
		"closed" in load ? await system.client.request("closed", load.closed) : await system.client.request("open", load.open);
	const after = await serverStats(system);
	const handled = after.map((s, i) => s.handled - before[i]!.handled);
	const cpu = after.reduce((sum, s, i) => sum + s.cpuUs - before[i]!.cpuUs, 0);
	const total = handled.reduce((a, b) => a + b, 0);
	const metrics: Metrics = {
		rate: r.rate,
		p50: r.p50,
		p90: r.p90,
		p99: r.p99,
		errors: r.errors,
		clientUs: r.clientCpuUsPerCall,
		serverUs: total > 0 ? cpu / total : Number.NaN,
		topReplicaShare: total > 0 ? Math.max(...handled) / total : Number.NaN
	};
	if (r.sendLagP99 !== undefined) metrics.sendLagP99 = r.sendLagP99;
	return metrics;
}

/** Unmeasured calls right after start, so no system's first measured round pays for JIT compilation. */
export async function warmUp(system: RemoteSystem, ms: number, payloads: unknown[] = [SMALL_PAYLOAD]): Promise<void> {
	for (const value of payloads) {
		await system.client.request("closed", {
			action: "bench.echo",
			params: { kind: "fixed", value },
			concurrency: 16,
			warmupMs: 0,
			durationMs: ms
		});
	}
}
