import { randomUUID } from "node:crypto";
import { Errors } from "moleculer";
import { ErrorType } from "../errors.ts";
import { checkChannel, DLQ_HEADERS, type ChannelAdapter, type ChannelStats, type SendOptions, type SendResult, type Subscription } from "./channel.ts";
import { deliver } from "./delivery.ts";
import type { ReceiptStore } from "./receipts.ts";

interface Envelope {
	id: string;
	/** JSON text: a handler gets its own copy, as it would from the wire. */
	body: string;
	headers: Record<string, string>;
}

interface Pending {
	env: Envelope;
	delivery: number;
}

interface Group {
	members: Subscription[];
	queue: Pending[];
	/** Messages in handlers, per member. */
	busy: Map<Subscription, number>;
	next: number;
}

interface Channel {
	/** The last `retain` messages, replayed to a group that starts from "all". */
	log: Envelope[];
	/** Ids sent within the duplicate window, with when. */
	recent: Map<string, number>;
	groups: Map<string, Group>;
}

export interface MemoryAdapterOptions {
	receipts: ReceiptStore;
	stats: ChannelStats;
	logger: { warn(...args: unknown[]): void };
	/** Messages kept per channel for groups that join later. Default 10000. */
	retain?: number;
	/** A resend of an id within this many ms is recognised as a duplicate. Default 120000. */
	duplicateWindow?: number;
}

/**
 * Channels inside one process, for `npm start` without NATS: the same groups, acks, retries with backoff,
 * dead letters and receipts as on JetStream, but nothing survives the process. Messages waiting for a retry or
 * for a member, and the receipts, are lost when it stops.
 */
export class MemoryChannelAdapter implements ChannelAdapter {
	readonly durable = false;
	private readonly opts: Required<MemoryAdapterOptions>;
	private readonly channels = new Map<string, Channel>();
	private readonly timers = new Set<NodeJS.Timeout>();
	private readonly idle = new Map<Subscription, () => void>();
	private closed = false;

	constructor(opts: MemoryAdapterOptions) {
		this.opts = { retain: 10_000, duplicateWindow: 120_000, ...opts };
	}

	private channel(name: string): Channel {
		let c = this.channels.get(name);
		if (!c) {
			c = { log: [], recent: new Map(), groups: new Map() };
			this.channels.set(name, c);
		}
		return c;
	}

	async send(channel: string, payload: unknown, opts: SendOptions = {}): Promise<SendResult> {
		if (this.closed) throw new Errors.MoleculerRetryableError("Channels are closed", 503, ErrorType.CHANNEL_UNAVAILABLE, { channel });
		const c = this.channel(checkChannel(channel));
		const id = opts.id ?? randomUUID();
		const now = Date.now();
		for (const [seen, at] of c.recent) {
			if (now - at <= this.opts.duplicateWindow) break;
			c.recent.delete(seen);
		}
		if (c.recent.has(id)) return { id, duplicate: true };
		c.recent.set(id, now);
		const env: Envelope = { id, body: JSON.stringify(payload ?? null), headers: { ...opts.headers } };
		c.log.push(env);
		if (c.log.length > this.opts.retain) c.log.shift();
		for (const g of c.groups.values()) {
			g.queue.push({ env, delivery: 0 });
			this.pump(g);
		}
		return { id, duplicate: false };
	}

	async subscribe(sub: Subscription): Promise<void> {
		const c = this.channel(sub.channel);
		let g = c.groups.get(sub.group);
		if (!g) {
			g = { members: [], queue: sub.startFrom === "all" ? c.log.map(env => ({ env, delivery: 0 })) : [], busy: new Map(), next: 0 };
			c.groups.set(sub.group, g);
		}
		g.members.push(sub);
		g.busy.set(sub, 0);
		this.pump(g);
	}

	async unsubscribe(sub: Subscription): Promise<void> {
		const g = this.channels.get(sub.channel)?.groups.get(sub.group);
		if (!g) return;
		g.members = g.members.filter(m => m !== sub);
		if ((g.busy.get(sub) ?? 0) > 0) await new Promise<void>(resolve => this.idle.set(sub, resolve));
		g.busy.delete(sub);
	}

	async close(): Promise<void> {
		this.closed = true;
		for (const t of this.timers) clearTimeout(t);
		this.timers.clear();
		this.channels.clear();
	}

	/** Hands queued messages to members with room, round robin. */
	private pump(g: Group): void {
		while (g.queue.length > 0 && g.members.length > 0) {
			let member: Subscription | undefined;
			for (let i = 0; i < g.members.length; i++) {
				const m = g.members[(g.next + i) % g.members.length]!;
				if ((g.busy.get(m) ?? 0) < m.maxInFlight) {
					member = m;
					g.next = (g.next + i + 1) % g.members.length;
					break;
				}
			}
			if (!member) return;
			const p = g.queue.shift()!;
			void this.run(g, member, p);
		}
	}

	private async run(g: Group, sub: Subscription, p: Pending): Promise<void> {
		g.busy.set(sub, (g.busy.get(sub) ?? 0) + 1);
		p.delivery++;
		const verdict = await deliver(
			sub,
			{ id: p.env.id, channel: sub.channel, group: sub.group, payload: JSON.parse(p.env.body), delivery: p.delivery, headers: { ...p.env.headers } },
			this.opts.receipts,
			this.opts.stats,
			this.opts.logger
		);
		const left = (g.busy.get(sub) ?? 1) - 1;
		g.busy.set(sub, left);
		if (left === 0) {
			this.idle.get(sub)?.();
			this.idle.delete(sub);
		}
		if (this.closed) return;
		if (verdict.kind === "retry") {
			const t = setTimeout(() => {
				this.timers.delete(t);
				g.queue.push(p);
				this.pump(g);
			}, verdict.delay);
			this.timers.add(t);
		} else if (verdict.kind === "dead") {
			await this.send(sub.deadLetter, JSON.parse(p.env.body), {
				id: `${sub.group}:${p.env.id}`,
				headers: {
					...p.env.headers,
					[DLQ_HEADERS.channel]: sub.channel,
					[DLQ_HEADERS.group]: sub.group,
					[DLQ_HEADERS.id]: p.env.id,
					[DLQ_HEADERS.deliveries]: String(p.delivery),
					[DLQ_HEADERS.error]: verdict.error
				}
			}).catch(err => this.opts.logger.warn(`Dead letter for '${p.env.id}' not stored`, err));
		}
		this.pump(g);
	}
}
