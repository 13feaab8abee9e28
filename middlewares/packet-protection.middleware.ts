import type { Logger, ServiceBroker } from "moleculer";
import { copiesOutOfBuffer } from "../lib/json.serializer.ts";
import { Counter, type Registry } from "prom-client";
import {
	PacketSeal,
	RELEASES_DATA,
	ScopeKind,
	scopeBytes,
	type ClusterKeys,
	type PacketCipher,
	type RejectReason
} from "../lib/packet-seal.ts";

export interface PacketProtectionOptions {
	/** `LATTICE_CLUSTER_KEY` (and `_PREVIOUS`), decoded. null leaves packets unprotected, with a loud warning in cluster mode. */
	keys: ClusterKeys | null;
	/** Cipher this node seals with; every node opens both. Default: ChaCha20-Poly1305 when libsodium loads, else AES-256-GCM. */
	cipher?: PacketCipher;
	/** Largest accepted clock difference between sender and receiver, in ms. Default 30 s. */
	maxSkewMs?: number;
	/** Senders whose replay windows are kept. Default 4096. */
	maxSenders?: number;
	/** Where `lattice_packets_rejected_total` and `lattice_packets_accepted_total` go (the node's /metrics). */
	registry?: Registry;
	/** At most one warning per this many ms about dropped packets. Default 10 s. */
	logIntervalMs?: number;
}

const REASONS: RejectReason[] = ["unprotected", "malformed", "unknown_key", "stale", "forged", "replayed"];

const HINTS: Record<RejectReason, string> = {
	unprotected: "a node without LATTICE_CLUSTER_KEY (or a plain Moleculer node) publishes on this namespace",
	malformed: "not a Lattice envelope (garbage or truncated)",
	unknown_key: "sealed with a key this node does not have: check LATTICE_CLUSTER_KEY/_PREVIOUS during a rollover",
	stale: "sender clock more than the allowed skew away, or an old packet replayed",
	forged: "tag check failed: tampered, moved to another subject or namespace, or a wrong key",
	replayed: "a packet already received"
};

/** A plain Moleculer middleware object; the transporter hooks are only there when a key is configured. */
export interface PacketProtectionMiddleware {
	name: string;
	[hook: string]: unknown;
}

type Send = (topic: string, data: Buffer, meta: { packet?: { type: string; target?: string | null }; balanced?: boolean }) => unknown;
type Receive = (cmd: string, data: Buffer, s?: unknown) => unknown;

/**
 * Seals every packet this node publishes in an authenticated, encrypted envelope (lib/packet-seal.ts) and drops
 * every received packet that does not open: no key, tampered, addressed elsewhere, too old or replayed. Dropped
 * packets never reach the transit (so they cannot announce services, call actions or fire events); they are
 * counted by reason and logged at a bounded rate.
 *
 * Put it first in the `middlewares` list: Moleculer wraps `transporterSend` and `transporterReceive` so that the
 * first middleware is the one next to the wire in both directions.
 */
export function PacketProtectionMiddleware(opts: PacketProtectionOptions): PacketProtectionMiddleware {
	let broker: ServiceBroker;
	let logger: Logger;

	if (!opts.keys) {
		return {
			name: "PacketProtection",
			created(b: ServiceBroker) {
				if (!b.transit) return;
				b.getLogger("packet-protection").warn(
					"!!! LATTICE_CLUSTER_KEY is not set: packets between nodes are neither encrypted nor authenticated. " +
						"Anyone who can reach the transporter can read every call and event, and impersonate nodes. " +
						"Set LATTICE_CLUSTER_KEY (openssl rand -base64 32) on every node; NODE_ENV=production refuses to start without it. !!!"
				);
			}
		};
	}

	const seal = new PacketSeal({ keys: opts.keys, cipher: opts.cipher, maxSkewMs: opts.maxSkewMs, maxSenders: opts.maxSenders });
	const registers = opts.registry ? [opts.registry] : [];
	const rejected = new Counter({
		name: "lattice_packets_rejected_total",
		help: "Received packets dropped before the transit, by reason",
		labelNames: ["reason"],
		registers
	});
	const accepted = new Counter({
		name: "lattice_packets_accepted_total",
		help: "Received packets that opened, by the key that opened them (previous: a rollover is still under way)",
		labelNames: ["key"],
		registers
	});
	const rejectedBy = Object.fromEntries(REASONS.map(r => [r, rejected.labels(r)])) as Record<RejectReason, Counter.Internal>;
	const acceptedBy = { current: accepted.labels("current"), previous: accepted.labels("previous") };
	// Zero from the start, so an alert on the rate has a series to look at before the first drop.
	for (const c of [...Object.values(rejectedBy), ...Object.values(acceptedBy)]) c.inc(0);

	const logInterval = opts.logIntervalMs ?? 10_000;
	let lastLog = -Infinity;
	let unlogged: Partial<Record<RejectReason, number>> = {};

	function drop(reason: RejectReason, cmd: string, bytes: number): void {
		rejectedBy[reason].inc();
		unlogged[reason] = (unlogged[reason] ?? 0) + 1;
		const now = Date.now();
		if (now - lastLog < logInterval) return;
		logger.warn(`Dropped a received ${cmd} packet (${bytes} B): ${reason}, ${HINTS[reason]}`, {
			droppedSinceLastWarning: unlogged
		});
		lastLog = now;
		unlogged = {};
	}

	// Opened packets are written into this one buffer when nothing keeps them after they are handled: Moleculer's JSON
	// serializer turns every packet into fresh strings and objects before the next one is opened (the transporter
	// delivers one at a time). Other serializers may hand out views into the bytes (MsgPack binaries), so with
	// them every packet gets its own buffer. Under load that is one batch-sized allocation less per message.
	let scratch: Buffer | undefined;

	// Scopes are built once per (type, target): a node talks to a bounded set of peers.
	const sendScopes = new Map<string, Buffer>();
	const receiveScopes = new Map<string, Array<Buffer | null>>();

	function sendScope(type: string, target: string): Buffer {
		const k = `${type}\0${target}`;
		let s = sendScopes.get(k);
		if (!s) {
			if (sendScopes.size > 10_000) sendScopes.clear();
			s = scopeBytes(broker.namespace, type, target);
			sendScopes.set(k, s);
		}
		return s;
	}

	function receiveScopesFor(cmd: string): Array<Buffer | null> {
		let s = receiveScopes.get(cmd);
		if (!s) {
			s = [];
			s[ScopeKind.broadcast] = scopeBytes(broker.namespace, cmd, "");
			s[ScopeKind.targeted] = scopeBytes(broker.namespace, cmd, broker.nodeID);
			s[ScopeKind.balanced] = scopeBytes(broker.namespace, cmd, "");
			receiveScopes.set(cmd, s);
		}
		return s;
	}

	return {
		name: "PacketProtection",

		created(b: ServiceBroker) {
			broker = b;
			logger = b.getLogger("packet-protection");
			if (!b.transit) return;
			if (copiesOutOfBuffer(b.serializer)) scratch = Buffer.allocUnsafeSlow(64 * 1024);
			logger.info(
				`Cluster packets sealed with ${seal.sealingWith}` +
					(opts.keys?.previous ? "; the previous key is still accepted (rollover)" : "")
			);
		},

		transporterSend(next: Send): Send {
			const send: Send = (topic, data, meta) => {
				const packet = meta?.packet;
				if (!packet) throw new Error(`Packet protection cannot tell where '${topic}' goes: no packet in the send metadata`);
				const target = meta.balanced ? null : packet.target;
				const kind = meta.balanced ? ScopeKind.balanced : target ? ScopeKind.targeted : ScopeKind.broadcast;
				return next(topic, seal.seal(sendScope(packet.type, target ?? ""), kind, data), meta);
			};
			// Sealing reads `data` once, synchronously, into the envelope it sends on.
			return Object.assign(send, { [RELEASES_DATA]: true });
		},

		transporterReceive(next: Receive): Receive {
			return (cmd, data, s) => {
				const scopes = receiveScopesFor(cmd);
				const r = seal.open(data, kind => scopes[kind] ?? null, scratch);
				if (!r.ok) return drop(r.reason, cmd, data.length);
				acceptedBy[r.key].inc();
				return next(cmd, r.data, s);
			};
		}
	};
}
