import { randomUUID } from "node:crypto";
import {
	AckPolicy,
	connect,
	DeliverPolicy,
	headers as natsHeaders,
	nanos,
	RetentionPolicy,
	StorageType,
	type ConnectionOptions,
	type ConsumerConfig,
	type ConsumerMessages,
	type JetStreamManager,
	type JsMsg,
	type NatsConnection
} from "nats";
import { Errors } from "moleculer";
import { ErrorType } from "../errors.ts";
import { checkChannel, DLQ_HEADERS, type ChannelAdapter, type ChannelMessage, type ChannelStats, type SendOptions, type SendResult, type Subscription } from "./channel.ts";
import { deliver, type Verdict } from "./delivery.ts";
import type { ReceiptStore } from "./receipts.ts";

export interface JetStreamAdapterOptions {
	/** How to reach NATS (servers, auth, TLS): the adapter keeps its own connection. */
	connection: ConnectionOptions;
	/** Broker namespace: streams and subjects of different namespaces never meet. */
	namespace: string;
	/** How long a stream keeps a message, ms. */
	maxAge: number;
	/** A resend of an id within this many ms is dropped by the stream. */
	duplicateWindow: number;
	/** Stream replicas (1 on a single server; 3 on a JetStream cluster). */
	replicas: number;
	/** A message not acked this long after delivery goes to another member, ms (kept alive while its handler runs). */
	ackWait: number;
	receipts: ReceiptStore;
	stats: ChannelStats;
	logger: { warn(...args: unknown[]): void; info(...args: unknown[]): void };
}

interface Running {
	messages: ConsumerMessages;
	loop: Promise<void>;
	inFlight: Set<Promise<void>>;
	stopping: boolean;
}

/** Names both ends agree on: one stream per channel. */
export function channelNames(namespace: string) {
	const ns = (namespace || "default").replace(/[^A-Za-z0-9_-]/g, "_");
	return {
		subject: (channel: string) => `lattice.${ns}.ch.${checkChannel(channel)}`,
		stream: (channel: string) => `LATTICE_${ns}_CH_${checkChannel(channel).replaceAll(".", "_")}`,
		/** Every stream of this namespace starts with this. */
		streamPrefix: `LATTICE_${ns}_CH_`
	};
}

function notFound(err: unknown): boolean {
	const e = err as { code?: string; api_error?: { code?: number } };
	return e.code === "404" || e.api_error?.code === 404;
}

function unavailable(message: string, data: unknown): Errors.MoleculerRetryableError {
	return new Errors.MoleculerRetryableError(message, 503, ErrorType.CHANNEL_UNAVAILABLE, data);
}

/**
 * Channels on NATS JetStream: one stream per channel (file storage, kept `maxAge`, deduplicated by message id
 * within `duplicateWindow`) and one durable pull consumer per group, shared by the group's members on every node.
 * What a publish acknowledges is stored by the server: it survives the sender, every consumer and a restart of
 * nats-server; a machine crash only with `sync_interval: always` on the server (README).
 */
export class JetStreamChannelAdapter implements ChannelAdapter {
	readonly durable = true;
	private readonly opts: JetStreamAdapterOptions;
	private readonly names: ReturnType<typeof channelNames>;
	private nc: Promise<NatsConnection> | null = null;
	private readonly streams = new Map<string, Promise<void>>();
	private readonly running = new Map<Subscription, Running>();

	constructor(opts: JetStreamAdapterOptions) {
		this.opts = opts;
		this.names = channelNames(opts.namespace);
	}

	private connection(): Promise<NatsConnection> {
		this.nc ??= connect({ maxReconnectAttempts: -1, ...this.opts.connection });
		this.nc.catch(() => (this.nc = null));
		return this.nc;
	}

	/** Creates the channel's stream (once per process), or brings an existing one to the configured limits. */
	private ensureStream(channel: string): Promise<void> {
		let ready = this.streams.get(channel);
		if (!ready) {
			ready = (async () => {
				const jsm = await (await this.connection()).jetstreamManager();
				const config = {
					name: this.names.stream(channel),
					subjects: [this.names.subject(channel)],
					storage: StorageType.File,
					retention: RetentionPolicy.Limits,
					max_age: nanos(this.opts.maxAge),
					duplicate_window: nanos(this.opts.duplicateWindow),
					num_replicas: this.opts.replicas
				};
				try {
					await jsm.streams.info(config.name);
				} catch (err) {
					if (!notFound(err)) throw err;
					try {
						await jsm.streams.add(config);
						return;
					} catch (addErr) {
						// Another node created it meanwhile.
						if (!String((addErr as Error).message).includes("already in use")) throw addErr;
					}
				}
				await jsm.streams.update(config.name, config);
			})();
			ready.catch(() => this.streams.delete(channel));
			this.streams.set(channel, ready);
		}
		return ready;
	}

	async send(channel: string, payload: unknown, opts: SendOptions = {}): Promise<SendResult> {
		const id = opts.id ?? randomUUID();
		try {
			await this.ensureStream(channel);
			const nc = await this.connection();
			const h = natsHeaders();
			for (const [k, v] of Object.entries(opts.headers ?? {})) h.set(k, v);
			const ack = await nc.jetstream().publish(this.names.subject(channel), JSON.stringify(payload ?? null), {
				msgID: id,
				headers: h,
				expect: { streamName: this.names.stream(channel) }
			});
			return { id, duplicate: ack.duplicate };
		} catch (err) {
			throw unavailable(`Channel '${channel}' did not store message '${id}': ${(err as Error).message}`, { channel, id });
		}
	}

	private async ensureConsumer(jsm: JetStreamManager, sub: Subscription): Promise<void> {
		const stream = this.names.stream(sub.channel);
		const config: Partial<ConsumerConfig> = {
			durable_name: sub.group,
			ack_policy: AckPolicy.Explicit,
			deliver_policy: sub.startFrom === "new" ? DeliverPolicy.New : DeliverPolicy.All,
			filter_subject: this.names.subject(sub.channel),
			ack_wait: nanos(this.opts.ackWait),
			// Dead-lettering is decided here, after the handler failed `maxDeliver` times; the server must not give up first.
			max_deliver: -1,
			max_ack_pending: Math.max(1000, sub.maxInFlight * 4)
		};
		try {
			const info = await jsm.consumers.info(stream, sub.group);
			if (info.config.ack_wait !== config.ack_wait || info.config.max_ack_pending !== config.max_ack_pending) {
				await jsm.consumers.update(stream, sub.group, { ack_wait: config.ack_wait, max_ack_pending: config.max_ack_pending });
			}
		} catch (err) {
			if (!notFound(err)) throw err;
			await jsm.consumers.add(stream, config);
		}
	}

	async subscribe(sub: Subscription): Promise<void> {
		await this.ensureStream(sub.channel);
		const nc = await this.connection();
		await this.ensureConsumer(await nc.jetstreamManager(), sub);
		const consumer = await nc.jetstream().consumers.get(this.names.stream(sub.channel), sub.group);
		const messages = await consumer.consume({ max_messages: sub.maxInFlight });
		const r: Running = { messages, loop: Promise.resolve(), inFlight: new Set(), stopping: false };
		r.loop = this.run(sub, r);
		this.running.set(sub, r);
	}

	private async run(sub: Subscription, r: Running): Promise<void> {
		for await (const m of r.messages) {
			// Fetched but not started: straight back to the group rather than waiting out the ack wait.
			if (r.stopping) {
				m.nak();
				continue;
			}
			while (r.inFlight.size >= sub.maxInFlight) await Promise.race(r.inFlight);
			const p = this.process(sub, m)
				.catch(err => this.opts.logger.warn(`Channel '${sub.channel}': message seq ${m.seq} left for redelivery`, (err as Error).message))
				.finally(() => r.inFlight.delete(p));
			r.inFlight.add(p);
		}
	}

	private async process(sub: Subscription, m: JsMsg): Promise<void> {
		const id = m.headers?.get("Nats-Msg-Id") || `${this.names.stream(sub.channel)}:${m.seq}`;
		const headers: Record<string, string> = {};
		for (const [k, v] of m.headers ?? []) if (!k.startsWith("Nats-")) headers[k] = v[0] ?? "";
		let payload: unknown;
		try {
			payload = m.json();
		} catch {
			await this.deadLetter(sub, m, id, headers, null, "the message is not JSON");
			return;
		}
		const msg: ChannelMessage = { id, channel: sub.channel, group: sub.group, payload, delivery: m.info.deliveryCount, headers };
		// Long handlers keep the message theirs instead of having it handed to another member after the ack wait.
		const keepAlive = setInterval(() => m.working(), Math.max(1000, this.opts.ackWait / 2));
		let verdict: Verdict;
		try {
			verdict = await deliver(sub, msg, this.opts.receipts, this.opts.stats, this.opts.logger);
		} finally {
			clearInterval(keepAlive);
		}
		if (verdict.kind === "ack") m.ack();
		else if (verdict.kind === "retry") m.nak(verdict.delay);
		else await this.deadLetter(sub, m, id, headers, payload, verdict.error);
	}

	/** Stores the message in the dead-letter channel, then removes it from the group; if that store fails, it is retried. */
	private async deadLetter(sub: Subscription, m: JsMsg, id: string, headers: Record<string, string>, payload: unknown, error: string): Promise<void> {
		try {
			await this.send(sub.deadLetter, payload, {
				id: `${sub.group}:${id}`,
				headers: {
					...headers,
					[DLQ_HEADERS.channel]: sub.channel,
					[DLQ_HEADERS.group]: sub.group,
					[DLQ_HEADERS.id]: id,
					[DLQ_HEADERS.deliveries]: String(m.info.deliveryCount),
					[DLQ_HEADERS.error]: error.replace(/[\r\n]+/g, " ")
				}
			});
			m.term();
		} catch (err) {
			this.opts.logger.warn(`Channel '${sub.channel}': dead letter for '${id}' not stored; retried`, (err as Error).message);
			m.nak(sub.backoff.at(-1) ?? 1000);
		}
	}

	async unsubscribe(sub: Subscription): Promise<void> {
		const r = this.running.get(sub);
		if (!r) return;
		this.running.delete(sub);
		r.stopping = true;
		r.messages.stop();
		await r.loop;
		await Promise.allSettled(r.inFlight);
	}

	async close(): Promise<void> {
		await Promise.all([...this.running.keys()].map(s => this.unsubscribe(s)));
		const nc = this.nc;
		this.nc = null;
		this.streams.clear();
		// Drain flushes the acks and naks still buffered.
		if (nc) await (await nc).drain().catch(() => undefined);
	}
}
