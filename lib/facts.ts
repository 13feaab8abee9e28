import {
	AckPolicy,
	DeliverPolicy,
	DiscardPolicy,
	nanos,
	RetentionPolicy,
	StorageType,
	type ConsumerConfig,
	type ConsumerMessages,
	type JetStreamManager,
	type JsMsg,
	type NatsConnection,
	type StreamConfig,
	type StreamSource
} from "nats";
import { Errors, type ServiceBroker } from "moleculer";
import { configError, ErrorType } from "./errors.ts";

/**
 * Store-and-forward of facts from edge sites to the cloud, on JetStream across the leafnode link (README, "Edge
 * sites"). A fact is something that happened at a site and must reach the cloud exactly once, in order per source:
 * a sensor reading, a till transaction.
 *
 * - Edge: {@link Outbox} writes each fact to the site's own stream, in the site leaf server's JetStream domain. The
 *   write is acknowledged by the site's server, so it succeeds while the hub is unreachable and survives the
 *   producing process (kill -9 included). The fact's id is the `Nats-Msg-Id`: a retried write inside the stream's
 *   duplicate window is recognised and not stored twice.
 * - Hub: one stream in the hub's domain sources every listed site's outbox across the link. The hub's server pulls
 *   from where it stopped whenever a link comes back; sourcing keeps each site's order.
 * - Cloud: {@link FactCollector} consumes the hub stream with a durable consumer, one fact at a time, and acks each
 *   only after its handler succeeded. A failing handler is retried in place rather than redelivered later, so a
 *   source's facts are never handled out of order. Facts whose `seq` is not above the last one handled for their
 *   source (a redelivery, a resync duplicate) are acked without calling the handler.
 *
 * What "exactly once" covers: any number of producer retries, process kills at the edge and in the cloud, cuts and
 * resyncs of the link. Not covered: a cloud consumer that dies after its handler ran but before the ack reached the
 * server hands that one fact to its successor, which starts without the in-memory high-water marks; handlers make
 * their effect idempotent by `id` to close that gap (the marks live in memory, not with the effect). Durability is
 * JetStream's: a process crash loses nothing acknowledged; a machine crash can lose the last `sync_interval`.
 */

export interface Fact<T = unknown> {
	/** Unique id of the fact, e.g. `<source>:<seq>`: the deduplication key end to end. */
	id: string;
	/** What produced it (a sensor, a device): order is kept per source. */
	source: string;
	/** Position in its source's sequence, from 1, without gaps when nothing is lost. */
	seq: number;
	data: T;
}

const TOKEN = /^[A-Za-z0-9_-]{1,64}$/;

function token(kind: string, value: string): string {
	if (!TOKEN.test(value)) throw configError(`${kind} '${value}' must be 1–64 letters, digits, '-' or '_'`, { [kind]: value });
	return value;
}

/** Subjects and stream names both ends agree on; the namespace keeps clusters sharing NATS apart. */
export function factNames(namespace: string) {
	const ns = (namespace || "default").replace(/[^A-Za-z0-9_-]/g, "_");
	const prefix = `lattice.${ns}.facts`;
	return {
		subject: (site: string, topic: string) => `${prefix}.${token("site", site)}.${token("topic", topic)}`,
		/** Everything a site publishes: what its outbox stores. */
		siteFilter: (site: string) => `${prefix}.${token("site", site)}.>`,
		/** Every site's facts on `topic`, as they arrive in the hub stream. */
		topicFilter: (topic: string) => `${prefix}.*.${token("topic", topic)}`,
		outbox: (site: string) => `LATTICE_${ns}_OUTBOX_${token("site", site)}`,
		hub: `LATTICE_${ns}_FACTS`
	};
}

/** The NATS connection of the broker's transporter: facts travel on the same link as calls. */
export function natsConnectionOf(broker: ServiceBroker): NatsConnection {
	const client = (broker.transit?.tx as { client?: NatsConnection } | undefined)?.client;
	if (!client) throw configError("Facts need the NATS transporter (TRANSPORTER=nats://…)");
	return client;
}

function notFound(err: unknown): boolean {
	const e = err as { code?: string; api_error?: { code?: number } };
	return e.code === "404" || e.api_error?.code === 404;
}

/** Creates the stream, or brings an existing one to `config`. */
async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
	try {
		await jsm.streams.info(config.name);
	} catch (err) {
		if (!notFound(err)) throw err;
		await jsm.streams.add(config);
		return;
	}
	await jsm.streams.update(config.name, config);
}

const DUPLICATE_WINDOW = 10 * 60_000;

export interface OutboxOptions {
	namespace: string;
	site: string;
	/** How long a fact stays in the outbox (ms). */
	maxAge: number;
	/** Outbox size (bytes): beyond it new facts are refused, none dropped. */
	maxBytes: number;
	/** A write retried within this long (ms) is recognised by id and not stored twice. Default 10 min. */
	duplicateWindow?: number;
}

export interface PublishResult {
	/** Facts stored by this call. */
	stored: number;
	/** Facts already in the outbox (a retry of an earlier write). */
	duplicates: number;
}

/** The edge end: a site's durable outbox in its own JetStream domain. */
export class Outbox {
	private readonly nc: NatsConnection;
	private readonly opts: OutboxOptions;
	private readonly names: ReturnType<typeof factNames>;

	constructor(nc: NatsConnection, opts: OutboxOptions) {
		this.nc = nc;
		this.opts = opts;
		this.names = factNames(opts.namespace);
	}

	get stream(): string {
		return this.names.outbox(this.opts.site);
	}

	/** Creates or updates the site's outbox stream on the site's own server. */
	async open(): Promise<void> {
		const jsm = await this.nc.jetstreamManager();
		await ensureStream(jsm, {
			name: this.stream,
			subjects: [this.names.siteFilter(this.opts.site)],
			storage: StorageType.File,
			retention: RetentionPolicy.Limits,
			discard: DiscardPolicy.New,
			max_age: nanos(this.opts.maxAge),
			max_bytes: this.opts.maxBytes,
			duplicate_window: nanos(this.opts.duplicateWindow ?? DUPLICATE_WINDOW),
			num_replicas: 1
		});
	}

	/**
	 * Stores `facts` in order and resolves once the site's server has acknowledged every one of them. One at a time:
	 * if a write fails, none after it is stored, so a retry of the whole batch cannot put a source out of order.
	 */
	async publish<T>(topic: string, facts: Fact<T>[]): Promise<PublishResult> {
		const js = this.nc.jetstream();
		const subject = this.names.subject(this.opts.site, topic);
		const result: PublishResult = { stored: 0, duplicates: 0 };
		for (const fact of facts) {
			let ack;
			try {
				// No `expect: { streamName }`: that header is stored with the fact and travels with it, and the hub
				// stream, whose name differs, would then refuse every sourced copy (seen with nats-server 2.9).
				ack = await js.publish(subject, JSON.stringify(fact), { msgID: fact.id });
			} catch (err) {
				throw new Errors.MoleculerRetryableError(
					`The site's outbox did not store fact '${fact.id}': ${(err as Error).message}`,
					503,
					ErrorType.OUTBOX_UNAVAILABLE,
					{ ...result, failed: fact.id }
				);
			}
			if (ack.duplicate) result.duplicates++;
			else result.stored++;
		}
		return result;
	}
}

export interface CollectorOptions<T> {
	namespace: string;
	/** The hub's JetStream domain. */
	hubDomain: string;
	/** Sites whose outboxes the hub stream sources. */
	sites: string[];
	topic: string;
	/** Durable consumer name: one per consuming service. */
	durable: string;
	handle(fact: Fact<T>, site: string): unknown;
	logger: { warn(...args: unknown[]): void; info(...args: unknown[]): void };
	/** First delay before a failed handler is retried (ms); doubles up to 30 s. Default 500. */
	retryDelay?: number;
}

export interface CollectorStats {
	/** Facts handed to the handler and acked. */
	handled: number;
	/** Facts acked without the handler: their source had already got that far. */
	duplicates: number;
	/** Facts whose `seq` skipped ahead of the last one handled for their source. */
	gaps: number;
	/** Messages that were not facts, terminated. */
	invalid: number;
}

function isFact(v: unknown): v is Fact {
	const f = v as Fact;
	return !!f && typeof f.id === "string" && typeof f.source === "string" && Number.isSafeInteger(f.seq) && f.seq > 0;
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/** The cloud end: the hub stream that collects the sites' outboxes, and a consumer of one topic in it. */
export class FactCollector<T = unknown> {
	readonly stats: CollectorStats = { handled: 0, duplicates: 0, gaps: 0, invalid: 0 };
	private readonly opts: CollectorOptions<T>;
	private readonly names: ReturnType<typeof factNames>;
	private readonly last = new Map<string, number>();
	private messages: ConsumerMessages | null = null;
	private loop: Promise<void> | null = null;
	private stopped = false;

	constructor(opts: CollectorOptions<T>) {
		this.opts = opts;
		this.names = factNames(opts.namespace);
		for (const site of opts.sites) token("site", site);
	}

	async start(nc: NatsConnection): Promise<void> {
		const domain = this.opts.hubDomain;
		const jsm = await nc.jetstreamManager({ domain });
		const stream = this.names.hub;
		const wanted: StreamSource[] = this.opts.sites.map(site => ({
			name: this.names.outbox(site),
			external: { api: `$JS.${site}.API`, deliver: "" }
		}));
		// Another consumer of the same hub stream may have listed other sites: keep them.
		let sources = wanted;
		try {
			const known = (await jsm.streams.info(stream)).config.sources ?? [];
			sources = [...known.filter(k => !wanted.some(w => w.name === k.name)), ...wanted];
		} catch (err) {
			if (!notFound(err)) throw err;
		}
		await ensureStream(jsm, {
			name: stream,
			storage: StorageType.File,
			retention: RetentionPolicy.Limits,
			duplicate_window: nanos(DUPLICATE_WINDOW),
			sources,
			num_replicas: 1
		});
		const consumer: Partial<ConsumerConfig> = {
			durable_name: this.opts.durable,
			ack_policy: AckPolicy.Explicit,
			deliver_policy: DeliverPolicy.All,
			filter_subject: this.names.topicFilter(this.opts.topic),
			ack_wait: nanos(30_000),
			max_ack_pending: 1000
		};
		try {
			await jsm.consumers.info(stream, this.opts.durable);
		} catch (err) {
			if (!notFound(err)) throw err;
			await jsm.consumers.add(stream, consumer);
		}
		const js = nc.jetstream({ domain });
		this.messages = await (await js.consumers.get(stream, this.opts.durable)).consume({ max_messages: 256 });
		this.loop = this.run(this.messages);
	}

	async stop(): Promise<void> {
		this.stopped = true;
		this.messages?.stop();
		await this.loop;
	}

	private async run(messages: ConsumerMessages): Promise<void> {
		for await (const m of messages) {
			await this.process(m);
			if (this.stopped) break;
		}
	}

	private async process(m: JsMsg): Promise<void> {
		let fact: unknown;
		try {
			fact = m.json();
		} catch {
			fact = null;
		}
		if (!isFact(fact)) {
			this.stats.invalid++;
			this.opts.logger.warn(`Not a fact on '${m.subject}' (stream seq ${m.seq}); terminated.`);
			m.term();
			return;
		}
		const last = this.last.get(fact.source);
		if (last !== undefined && fact.seq <= last) {
			this.stats.duplicates++;
			m.ack();
			return;
		}
		if (last !== undefined && fact.seq > last + 1) {
			this.stats.gaps++;
			this.opts.logger.warn(`Source '${fact.source}' skipped from ${last} to ${fact.seq}.`);
		}
		const site = m.subject.split(".")[3] ?? "";
		for (let delay = this.opts.retryDelay ?? 500; ; delay = Math.min(delay * 2, 30_000)) {
			try {
				await this.opts.handle(fact as Fact<T>, site);
				break;
			} catch (err) {
				// Left unacked when stopping: the next consumer gets it again, still first in its source.
				if (this.stopped) return;
				this.opts.logger.warn(`Handling fact '${fact.id}' failed; retrying in ${delay} ms.`, err);
				m.working();
				await sleep(delay);
			}
		}
		this.last.set(fact.source, fact.seq);
		this.stats.handled++;
		m.ack();
	}
}
