import { Transporters } from "moleculer";

interface NatsStatus {
	type: string;
}

interface NatsClient {
	status(): AsyncIterable<NatsStatus>;
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

	override onConnected(wasReconnect?: boolean): Promise<unknown> {
		if (!this.watching && this.client) {
			this.watching = true;
			void this.watch(this.client as NatsClient);
		}
		return super.onConnected(wasReconnect);
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
