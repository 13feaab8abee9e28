import { Transporters } from "moleculer";
import type { Subscription } from "nats";

interface NatsStatus {
	type: string;
}

interface NatsMsg {
	data?: Uint8Array;
}

type NatsCallback = (err: Error | null, msg: NatsMsg) => void;

interface NatsClient {
	status(): AsyncIterable<NatsStatus>;
	subscribe(subject: string, opts: { queue?: string; callback: NatsCallback }): Subscription;
}

const REQUEST = "REQ";
const EVENT = "EVENT";
const INFO = "INFO";

/**
 * How long a connecting node listens for the other nodes' INFO before its services start and it reports ready.
 * Moleculer waits a fixed 500 ms, half of a node's cold start; here the wait ends once INFO has stopped arriving.
 */
export interface DiscoveryWait {
	/** Least wait after asking every node for its INFO, in ms. Default 100: NATS round trips in a cluster take a few. */
	minMs: number;
	/** Then wait until no INFO has arrived for this long, in ms. Default 50. */
	quietMs: number;
	/** Never longer than this in all, in ms. Default 500, Moleculer's fixed wait. */
	maxMs: number;
}

export const DEFAULT_DISCOVERY_WAIT: DiscoveryWait = { minMs: 100, quietMs: 50, maxMs: 500 };

/** The parts of Moleculer 0.15's Transit that `afterConnect` uses (transit.js), re-run here with a shorter wait. */
interface TransitInternals {
	connected: boolean;
	isReady: boolean;
	__connectResolve: ((v: null) => void) | null;
	makeSubscriptions(): Promise<unknown>;
	discoverer: { sendLocalNodeInfo(): Promise<unknown>; discoverAllNodes(): Promise<unknown> };
	metrics: { set(name: string, value: number): void };
}

/**
 * Moleculer's NATS transporter leaves reconnects to the nats client and only logs its status changes. While the
 * link is down the transit still claims to be connected (so /ready stays 200), and after a reconnect nothing
 * re-announces the node or fires `$transporter.connected` (so caches keep entries whose invalidation they may
 * have missed). This subclass maps the client's disconnect/reconnect onto the transit's state and events.
 *
 * The transporter's own `connected` flag is left alone on purpose: while it is true the nats client buffers
 * outgoing packets (responses included) and flushes them on reconnect instead of dropping them.
 */
export class LatticeNatsTransporter extends Transporters.NATS {
	private watching = false;
	private readonly discoveryWait: DiscoveryWait;
	private lastInfoAt = 0;

	constructor(opts: Record<string, unknown> & { discoveryWait?: Partial<DiscoveryWait> }) {
		// Not a NATS client option: kept out of what nats.connect() is given.
		const { discoveryWait, ...nats } = opts;
		super(nats);
		this.discoveryWait = { ...DEFAULT_DISCOVERY_WAIT, ...discoveryWait };
	}

	override onConnected(wasReconnect?: boolean): Promise<unknown> {
		if (!this.watching && this.client) {
			this.watching = true;
			void this.watch(this.client as NatsClient);
		}
		this.connected = true;
		return this.announce(wasReconnect === true);
	}

	/**
	 * Moleculer's Transit#afterConnect (0.15) step by step, with the fixed 500 ms wait for INFO replaced by
	 * {@link settle}: subscribe (or re-announce after a reconnect), ask every node for its INFO, wait for the
	 * answers, then mark the transit connected, which lets the broker start its services.
	 */
	private async announce(wasReconnect: boolean): Promise<void> {
		const transit = this.transit as unknown as TransitInternals;
		if (wasReconnect) await transit.discoverer.sendLocalNodeInfo();
		else await transit.makeSubscriptions();
		const asked = Date.now();
		await transit.discoverer.discoverAllNodes();
		await this.settle(asked);
		transit.connected = true;
		transit.metrics.set("moleculer.transit.connected", 1);
		this.broker.broadcastLocal("$transporter.connected", { wasReconnect });
		if (transit.__connectResolve) {
			transit.isReady = true;
			transit.__connectResolve(null);
			transit.__connectResolve = null;
		}
	}

	/** Resolves once INFO replies have stopped coming (see {@link DiscoveryWait}). */
	private async settle(asked: number): Promise<void> {
		const { minMs, quietMs, maxMs } = this.discoveryWait;
		for (;;) {
			await new Promise(resolve => setTimeout(resolve, 10));
			const now = Date.now();
			if (now - asked >= maxMs) return;
			if (now - asked >= minMs && now - Math.max(this.lastInfoAt, asked) >= quietMs) return;
		}
	}

	/*
	 * Moleculer's subscriptions read `msg.data` even when the client reports an error. When the server refuses a
	 * subscription (broker-enforced mode, a unit without permission on the subject) nats.js calls back with an error
	 * and an empty message, and that read threw out of the client's socket handler and killed the process. The
	 * refusal itself is counted and logged by the bus-permissions middleware.
	 */
	override subscribe(cmd: string, nodeID?: string): Promise<void> {
		this.listen(this.getTopicName(cmd, nodeID), undefined, cmd);
		return Promise.resolve();
	}

	override subscribeBalancedRequest(action: string): Promise<void> {
		this.subscriptions.push(this.listen(`${this.prefix}.${REQUEST}B.${action}`, action, REQUEST));
		return Promise.resolve();
	}

	override subscribeBalancedEvent(event: string, group: string): Promise<void> {
		const subject = `${this.prefix}.${EVENT}B.${group}.${event}`.replace(/\*\*.*$/g, ">");
		this.subscriptions.push(this.listen(subject, group, EVENT));
		return Promise.resolve();
	}

	private listen(subject: string, queue: string | undefined, cmd: string): Subscription {
		return (this.client as NatsClient).subscribe(subject, {
			queue,
			callback: (err, msg) => {
				if (err || !msg.data) {
					this.logger.warn(`NATS subscription on '${subject}' ended: ${err?.message ?? "no data"}`);
					return;
				}
				// A view, not a copy (Moleculer's transporter copies): nats.js hands each message its own slice of a
				// socket chunk it never reuses, and the packet is opened and parsed before this returns.
				const data = msg.data;
				if (cmd === INFO) this.lastInfoAt = Date.now();
				this.receive(cmd, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
			}
		});
	}

	private async watch(client: NatsClient): Promise<void> {
		for await (const s of client.status()) {
			if (s.type === "disconnect") this.linkLost();
			else if (s.type === "reconnect") await this.linkRegained();
		}
	}

	private linkLost(): void {
		if (!this.transit.connected) return;
		this.transit.connected = false;
		this.logger.warn("NATS connection lost; reconnecting");
		this.broker.broadcastLocal("$transporter.disconnected", { graceFul: false });
	}

	private async linkRegained(): Promise<void> {
		this.logger.info("NATS connection re-established");
		// The transit only sends INFO while connected; afterConnect re-announces the node and fires
		// `$transporter.connected`, which restarts heartbeats and drops the cacher's L1.
		this.transit.connected = true;
		try {
			await this.onConnected(true);
		} catch (err) {
			this.logger.warn("Re-announcing after reconnect failed", err);
		}
	}
}

/** The name moleculer.config.ts asks for; Moleculer's typings declare `register` for instances, it takes classes. */
export const LATTICE_NATS = "LatticeNATS";
Transporters.register(LATTICE_NATS, LatticeNatsTransporter as unknown as Transporters.Base);
