import type { FaultRule } from "../../middlewares/fault-injection.middleware.ts";
import { startNode, type LatticeNode, type NodeOptions } from "./cluster.ts";
import { sleep, type ManagedProcess, type NatsServer } from "./processes.ts";

/**
 * Ways to break a cluster on purpose, on top of processes.ts (kill, stop, restart) and cluster.ts (nodes).
 */

/**
 * Freezes a process (SIGSTOP): its sockets stay open but it answers nothing, which is how a partitioned or hung
 * node looks to its peers. `resume` thaws it.
 */
export function pause(p: ManagedProcess): void {
	p.proc.kill("SIGSTOP");
}

export function resume(p: ManagedProcess): void {
	p.proc.kill("SIGCONT");
}

/** Stops a nats-server (SIGKILL when `hard`), keeps it down `downMs`, and starts it on the same port. */
export async function restartNats(server: NatsServer, downMs: number, hard = false): Promise<{ downAt: number; upAt: number }> {
	await server.stop(hard);
	const downAt = Date.now();
	await sleep(downMs);
	await server.start();
	return { downAt, upAt: Date.now() };
}

/** The environment that gives a node these fault-injection rules (see middlewares/fault-injection.middleware.ts). */
export function faultEnv(rules: FaultRule[]): { LATTICE_FAULTS: string } {
	return { LATTICE_FAULTS: JSON.stringify(rules) };
}

/** Starts `count` nodes at once, named `<prefix>-1` … `<prefix>-<count>`. */
export function startNodes(count: number, prefix: string, opts: Omit<NodeOptions, "nodeID">): Promise<LatticeNode[]> {
	return Promise.all(Array.from({ length: count }, (_, i) => startNode({ ...opts, nodeID: `${prefix}-${i + 1}` })));
}

/** Stops every node and server given (SIGTERM, then SIGKILL after `graceMs`), ignoring those already gone. */
export async function stopAll(items: ({ stop(graceMs?: number): Promise<unknown> } | { destroy(): Promise<void> } | null | undefined)[], graceMs = 5000): Promise<void> {
	await Promise.all(
		items.map(async item => {
			if (!item) return;
			try {
				if ("destroy" in item) await item.destroy();
				else await item.stop(graceMs);
			} catch {
				// Already gone: nothing to clean up.
			}
		})
	);
}
