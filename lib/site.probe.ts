import type { ServiceBroker } from "moleculer";
import { tierOf } from "./locality.strategy.ts";
import type { Topology } from "./settings.ts";

export interface SiteProbeOptions {
	/** Milliseconds between pings to each node in another site. */
	interval: number;
	/** Consecutive unanswered pings after which such a node is dropped from the registry. */
	misses: number;
}

interface ProbedNode {
	id: string;
	local: boolean;
	available: boolean;
	metadata: Partial<Topology> | null;
	services?: { actions?: Record<string, unknown> }[];
}

interface Internals {
	transit?: { connected: boolean; sendPing(nodeID: string): Promise<void> };
	registry: {
		nodes: { toArray(): ProbedNode[]; get(id: string): ProbedNode | undefined; disconnected(id: string, unexpected: boolean): void };
		discoverer: { discoverNode(nodeID: string): unknown };
	};
}

/**
 * Notices within seconds that another site has become unreachable, and that it is back.
 *
 * Between sites every packet crosses a leafnode link. When that link drops, nothing tells the nodes on either
 * side: Moleculer keeps listing the far nodes until their heartbeats are `heartbeatTimeout` overdue (checked every
 * `heartbeatTimeout`: 15–30 s with Lattice's presets) and sends them calls that wait for `requestTimeout`. The
 * probe pings every available node outside this node's site each `interval`; a node that leaves `misses` pings in
 * a row unanswered is disconnected in the registry, exactly as the heartbeat check would do later: its endpoints
 * go, its pending requests are rejected at once, and calls that need it fail fast. It keeps pinging the nodes it
 * dropped and rediscovers each as soon as it answers, so registries converge within an interval of the link's
 * return instead of at the next heartbeat.
 *
 * Nodes in this node's own site share its NATS server and are left to the heartbeats and to the failover
 * middleware. Pings only count while this node's own NATS connection is up, and a tick that comes late (this
 * process was stalled, so pongs may be waiting unread) forgives every outstanding ping.
 */
export class SiteProbe {
	/** Nodes this probe dropped, with when. */
	readonly dropped = new Map<string, number>();
	private readonly outstanding = new Map<string, number>();
	private readonly broker: ServiceBroker;
	private readonly opts: SiteProbeOptions;
	private readonly logger: ReturnType<ServiceBroker["getLogger"]>;
	private timer: NodeJS.Timeout | null = null;
	private lastTick = 0;

	constructor(broker: ServiceBroker, opts: SiteProbeOptions) {
		this.broker = broker;
		this.opts = opts;
		this.logger = broker.getLogger("site-probe");
	}

	private get internals(): Internals {
		return this.broker as unknown as Internals;
	}

	private readonly onPong = (payload: { nodeID: string }): void => {
		const id = payload.nodeID;
		this.outstanding.delete(id);
		if (!this.dropped.delete(id)) return;
		const node = this.internals.registry.nodes.get(id);
		if (node && !node.available) {
			this.logger.info(`Node '${id}' answers again; rediscovering it.`);
			this.internals.registry.discoverer.discoverNode(id);
		}
	};

	start(): void {
		if (this.opts.interval <= 0 || !this.internals.transit) return;
		this.broker.localBus.on("$node.pong", this.onPong);
		this.lastTick = Date.now();
		this.timer = setInterval(() => this.tick(), this.opts.interval);
		this.timer.unref();
	}

	stop(): void {
		if (this.timer) clearInterval(this.timer);
		this.timer = null;
		this.broker.localBus.off("$node.pong", this.onPong);
	}

	/** Ids of the dropped nodes that served `action` when they were dropped. */
	droppedServing(action: string): string[] {
		const ids: string[] = [];
		for (const id of this.dropped.keys()) {
			const node = this.internals.registry.nodes.get(id);
			if (node?.services?.some(s => s.actions && action in s.actions)) ids.push(id);
		}
		return ids;
	}

	tick(): void {
		const now = Date.now();
		const stalled = now - this.lastTick > 2 * this.opts.interval;
		this.lastTick = now;
		const { transit, registry } = this.internals;
		if (!transit?.connected) return;
		if (stalled) this.outstanding.clear();
		const here = this.broker.metadata as Partial<Topology>;
		for (const node of registry.nodes.toArray()) {
			if (node.local) continue;
			if (!node.available) {
				if (this.dropped.has(node.id)) void transit.sendPing(node.id);
				continue;
			}
			if (tierOf(here, node.metadata) <= 1) continue;
			const unanswered = this.outstanding.get(node.id) ?? 0;
			if (unanswered < this.opts.misses) {
				this.outstanding.set(node.id, unanswered + 1);
				void transit.sendPing(node.id);
				continue;
			}
			this.outstanding.delete(node.id);
			this.dropped.set(node.id, now);
			this.logger.warn(`Node '${node.id}' (site '${node.metadata?.site}') left ${unanswered} pings unanswered; dropping it until it answers.`);
			registry.nodes.disconnected(node.id, true);
		}
		for (const id of this.dropped.keys()) if (!registry.nodes.get(id)) this.dropped.delete(id);
	}
}
