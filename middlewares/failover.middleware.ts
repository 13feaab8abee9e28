import { Errors, type ServiceBroker } from "moleculer";
import { Counter, type Registry } from "prom-client";

export interface FailoverOptions {
	/** A request to another node unanswered for this long (ms) makes this node ping that one; 0 turns probing off. Default 1000. */
	probeAfter?: number;
	/** How long that ping may go unanswered (ms) before the node is declared gone. Default 2000. */
	probeTimeout?: number;
	/** prom-client registry for `lattice_failover_probes_total`. */
	registry?: Registry;
}

export const DEFAULT_FAILOVER = { probeAfter: 1000, probeTimeout: 2000 } as const;

interface PendingRequest {
	nodeID?: string;
	action?: { name?: string; retryPolicy?: { enabled?: boolean } };
	reject(err: Error): void;
}

interface Internals {
	transit?: { connected: boolean; pendingRequests: Map<string, PendingRequest>; removePendingRequest(id: string): void };
	registry: { nodes: { get(id: string): { available: boolean } | undefined; disconnected(id: string, unexpected: boolean): void } };
}

/**
 * Fast failover for a node that dies without saying goodbye (kill -9, OOM kill, a pulled cable). Moleculer only
 * notices such a node when its heartbeats stop, after `heartbeatTimeout` (checked every `heartbeatTimeout`, so 15–30
 * s with the presets); until then it keeps routing calls there and every one waits for `requestTimeout`.
 *
 * This middleware watches the requests this node has in flight. When one has waited `probeAfter` ms, the node it
 * went to gets a PING; if no PONG comes back within `probeTimeout` ms while this node's own link is up, the node is
 * marked disconnected right away. That is what the heartbeat check would do later: its services leave the registry
 * and its pending requests are rejected with a retryable error, so a retry policy reruns them on a live replica.
 * A node that was only stalled comes back with its next heartbeat. The check costs nothing per call: a timer scans
 * the pending requests a few times per `probeAfter`.
 *
 * The same holds after this node's own NATS link drops and comes back: NATS keeps no messages for subscribers that
 * are away, so a request or reply sent while either end was reconnecting is gone, and its caller would wait for
 * `requestTimeout`. Requests still unanswered `probeAfter` ms after the link is back are failed with a retryable
 * REQUEST_REJECTED, but only for actions that declare a retry policy (retry-safe by their own declaration), so the
 * policy re-sends them at once; any other call keeps waiting, since running it twice could be worse than waiting.
 */
export function FailoverMiddleware(opts: FailoverOptions = {}) {
	const probeAfter = opts.probeAfter ?? DEFAULT_FAILOVER.probeAfter;
	const probeTimeout = opts.probeTimeout ?? DEFAULT_FAILOVER.probeTimeout;
	const firstSeen = new WeakMap<PendingRequest, number>();
	const probing = new Set<string>();
	/** When each node last answered a probe: a node busy with slow requests is not pinged more than once per `probeAfter`. */
	const answered = new Map<string, number>();
	let timer: NodeJS.Timeout | null = null;
	let broker: ServiceBroker;

	const probes = new Counter({
		name: "lattice_failover_probes_total",
		help: "Pings sent to nodes with overdue requests, by result (alive, dropped)",
		labelNames: ["result"],
		registers: opts.registry ? [opts.registry] : []
	});
	const alive = probes.labels("alive");
	const dropped = probes.labels("dropped");
	const lost = new Counter({
		name: "lattice_failover_lost_requests_total",
		help: "Retry-safe requests failed fast (to be retried) because they were in flight while this node's link was down",
		registers: opts.registry ? [opts.registry] : []
	});
	let linkDown = false;

	function internals(): Internals {
		return broker as unknown as Internals;
	}

	async function probe(nodeID: string): Promise<void> {
		probing.add(nodeID);
		try {
			const pong = await broker.ping(nodeID, probeTimeout);
			const { transit, registry } = internals();
			if (pong) {
				alive.inc();
				answered.set(nodeID, Date.now());
				return;
			}
			// With our own link down no pong could come back: that says nothing about the other node.
			if (!transit?.connected || !registry.nodes.get(nodeID)?.available) return;
			dropped.inc();
			broker.logger.warn(`Node '${nodeID}' did not answer a ping within ${probeTimeout} ms; dropping it.`);
			registry.nodes.disconnected(nodeID, true);
		} finally {
			probing.delete(nodeID);
		}
	}

	function scan(): void {
		const transit = internals().transit;
		if (!transit?.connected) return;
		const now = Date.now();
		const overdue = new Set<string>();
		for (const req of transit.pendingRequests.values()) {
			const seen = firstSeen.get(req);
			if (seen === undefined) firstSeen.set(req, now);
			else if (now - seen >= probeAfter && req.nodeID && !probing.has(req.nodeID)) overdue.add(req.nodeID);
		}
		for (const nodeID of overdue) {
			if (now - (answered.get(nodeID) ?? 0) >= probeAfter) void probe(nodeID);
		}
	}

	function retrySafe(req: PendingRequest): boolean {
		return req.action?.retryPolicy?.enabled ?? broker.options.retryPolicy?.enabled ?? false;
	}

	/** Fails the retry-safe requests of `suspects` that are still unanswered. */
	function failLost(suspects: Set<PendingRequest>): void {
		const transit = internals().transit;
		if (!transit?.connected) return;
		for (const [id, req] of transit.pendingRequests) {
			if (!suspects.has(req) || !retrySafe(req)) continue;
			transit.removePendingRequest(id);
			lost.inc();
			req.reject(new Errors.RequestRejectedError({ action: req.action?.name ?? "", nodeID: req.nodeID ?? "" }));
		}
	}

	return {
		name: "Failover",

		created(b: ServiceBroker) {
			broker = b;
			if (probeAfter <= 0) return;
			b.localBus.on("$transporter.disconnected", () => {
				linkDown = true;
			});
			b.localBus.on("$transporter.connected", (payload: { wasReconnect?: boolean } | undefined) => {
				const transit = internals().transit;
				if (!transit || !(linkDown || payload?.wasReconnect)) return;
				linkDown = false;
				const suspects = new Set(transit.pendingRequests.values());
				if (suspects.size > 0) setTimeout(() => failLost(suspects), probeAfter).unref();
			});
		},

		async started() {
			if (probeAfter <= 0 || !internals().transit) return;
			timer = setInterval(scan, Math.max(50, Math.floor(probeAfter / 4)));
			timer.unref();
		},

		async stopping() {
			if (timer) clearInterval(timer);
			timer = null;
		}
	};
}
