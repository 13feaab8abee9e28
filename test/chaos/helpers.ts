import type { TestContext } from "node:test";
import type { ServiceBroker } from "moleculer";
import { createBroker, type LoadReport } from "../support/index.ts";

/** The fixture every chaos suite runs on its replicas. */
export const CHAOS_SERVICE = "test/chaos/fixtures/chaos.service.ts";
export const CHAOS_GATEWAY = "test/chaos/fixtures/gateway.service.ts";

/** The test's own Lattice node (real config), logging errors only: retries and failovers are expected here. */
export function quietClient(env: Record<string, string>, nodeID = "client"): Promise<ServiceBroker> {
	return createBroker({ ...env, NODEID: nodeID, LOGLEVEL: "error" });
}

interface Node {
	id: string;
	available: boolean;
}

/** Whether `broker` currently counts `nodeID` as a live member of the cluster. */
export function nodeAvailable(broker: ServiceBroker, nodeID: string): boolean {
	return (broker.registry.getNodeList({ onlyAvailable: true, withServices: false }) as Node[]).some(n => n.id === nodeID);
}

/** Puts a run's figures in the test output (node --test prints diagnostics), for the README's reliability table. */
export function report(t: TestContext, scenario: string, r: LoadReport, extra: Record<string, unknown> = {}): void {
	const figures = {
		scenario,
		calls: r.calls,
		failed: r.failed,
		errors: r.errors,
		seconds: Math.round(r.durationMs / 100) / 10,
		callsPerSecond: Math.round(r.throughput),
		p50: round(r.latency.p50),
		p99: round(r.latency.p99),
		maxMs: round(r.latency.max),
		...extra
	};
	t.diagnostic(JSON.stringify(figures));
}

function round(ms: number): number {
	return Math.round(ms * 10) / 10;
}

