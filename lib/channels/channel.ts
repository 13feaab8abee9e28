import type { Context, Service, ServiceBroker } from "moleculer";
import { configError } from "../errors.ts";

/**
 * Channels: named, persistent message queues for facts that must not be lost (README, "Consistency model").
 * Unlike Moleculer events, a message sent to a channel is kept until every consumer group that reads the channel
 * has handled it; a group whose members are all down gets its backlog when one comes back.
 *
 * - Every group gets every message; inside a group, each message goes to one member (load balancing).
 * - A message is handed out at least once and acked after its handler resolves; a handler that throws gets it
 *   again after the handler's backoff, up to `maxDeliver` times, then it is moved to the dead-letter channel.
 * - Consumers are idempotent by message id: a group runs its handler once per id (receipts), however often the
 *   message is sent or delivered.
 */

/** One message as a handler receives it. */
export interface ChannelMessage<T = unknown> {
	/** The message id: the sender's (an idempotency key), or a random UUID. */
	id: string;
	channel: string;
	group: string;
	payload: T;
	/** This delivery's number, from 1. */
	delivery: number;
	headers: Record<string, string>;
}

/** A channel handler. `ctx.params` is the payload; calls made with `ctx.call` are made as the service. */
export type ChannelHandlerFn<T = unknown> = (this: Service, ctx: Context<T>, msg: ChannelMessage<T>) => unknown;

/** What a service declares under `channels` in its schema. */
export interface ChannelHandlerSchema<T = unknown> {
	/** Consumer group. Default the service's full name: replicas of a service share the work. */
	group?: string;
	/** Deliveries before the message goes to the dead-letter channel. Default 5. */
	maxDeliver?: number;
	/** Wait before redelivering a failed message, ms: one value, or one per retry (the last repeats). */
	backoff?: number | number[];
	/** Messages this member handles at once. Default 16. */
	maxInFlight?: number;
	/** A handler still running after this many ms counts as failed. Default 30000. */
	timeout?: number;
	/** Where messages go after `maxDeliver` failed deliveries. Default `<channel>.DLQ`. */
	deadLetter?: string;
	/** Where a group seen for the first time starts: every retained message (default) or only new ones. */
	startFrom?: "all" | "new";
	handler: ChannelHandlerFn<T>;
}

/** A service schema's `channels` section: channel name → handler (or a bare handler function). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each handler declares its own payload type
export type ChannelsSchema = Record<string, ChannelHandlerSchema<any> | ChannelHandlerFn<any>>;

/** A resolved subscription: one channel, one group, one member (this service on this node). */
export interface Subscription {
	channel: string;
	group: string;
	maxDeliver: number;
	backoff: number[];
	maxInFlight: number;
	timeout: number;
	deadLetter: string;
	startFrom: "all" | "new";
	/** Runs the handler; resolves when it succeeded. */
	handle(msg: ChannelMessage): Promise<void>;
}

export interface SendOptions {
	/**
	 * Message id. Give a stable one (e.g. `order-17:confirmed`) and a resend is recognised: by the stream
	 * within its duplicate window, by each group's receipts after that. Default a random UUID.
	 */
	id?: string;
	headers?: Record<string, string>;
}

export interface SendResult {
	id: string;
	/** The same id was already stored within the duplicate window: nothing new was stored. */
	duplicate: boolean;
}

/** Where messages live: JetStream across the cluster, or the process's memory. */
export interface ChannelAdapter {
	readonly durable: boolean;
	send(channel: string, payload: unknown, opts?: SendOptions): Promise<SendResult>;
	subscribe(sub: Subscription): Promise<void>;
	/** Stops handing `sub` new messages and waits for the ones in its handlers. */
	unsubscribe(sub: Subscription): Promise<void>;
	close(): Promise<void>;
}

/** Outcomes counted per channel and group. */
export type Outcome = "handled" | "duplicate" | "retried" | "dead_lettered";

export interface ChannelStats {
	record(channel: string, group: string, outcome: Outcome): void;
}

/** Header names Lattice puts on dead letters. */
export const DLQ_HEADERS = {
	channel: "Lattice-Channel",
	group: "Lattice-Group",
	id: "Lattice-Message-Id",
	deliveries: "Lattice-Deliveries",
	error: "Lattice-Error"
} as const;

export const DEFAULTS = {
	maxDeliver: 5,
	backoff: [500, 2_000, 10_000, 30_000],
	maxInFlight: 16,
	timeout: 30_000,
	startFrom: "all"
} as const;

const CHANNEL = /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/;
const GROUP = /^[A-Za-z0-9_-]+$/;

/** Channel names are dot-separated tokens of letters, digits and '-' (they become NATS subjects and stream names). */
export function checkChannel(name: string): string {
	if (!CHANNEL.test(name) || name.length > 128) {
		throw configError(`Channel '${name}' must be dot-separated tokens of letters, digits and '-' (at most 128 characters)`, { channel: name });
	}
	return name;
}

/** Delay before delivery `delivery + 1` after delivery `delivery` failed. */
export function backoffDelay(backoff: number[], delivery: number): number {
	if (backoff.length === 0) return 0;
	return backoff[Math.min(delivery, backoff.length) - 1] ?? 0;
}

function positiveInt(where: string, key: string, v: unknown, fallback: number, max: number): number {
	if (v === undefined) return fallback;
	if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max) throw configError(`${where}: '${key}' must be an integer 1–${max}`);
	return v as number;
}

/** Checks one declaration and fills in the defaults; a bad declaration stops the service from starting. */
export function resolveSubscription(
	service: Service,
	channel: string,
	decl: ChannelHandlerSchema | ChannelHandlerFn,
	run: (handler: ChannelHandlerFn, msg: ChannelMessage) => Promise<void>
): Subscription {
	const d: ChannelHandlerSchema = typeof decl === "function" ? { handler: decl } : decl;
	const where = `Service '${service.fullName}', channel '${channel}'`;
	checkChannel(channel);
	if (typeof d.handler !== "function") throw configError(`${where}: 'handler' must be a function`);
	const group = d.group ?? service.fullName.replace(/[^A-Za-z0-9_-]/g, "_");
	if (!GROUP.test(group) || group.length > 64) throw configError(`${where}: group '${group}' must be 1–64 letters, digits, '-' or '_'`);
	const backoff = d.backoff === undefined ? [...DEFAULTS.backoff] : Array.isArray(d.backoff) ? d.backoff : [d.backoff];
	if (!backoff.every(ms => Number.isInteger(ms) && ms >= 0 && ms <= 3_600_000)) throw configError(`${where}: 'backoff' must be ms (0–3600000)`);
	const deadLetter = d.deadLetter ?? `${channel}.DLQ`;
	checkChannel(deadLetter);
	if (deadLetter === channel) throw configError(`${where}: the dead-letter channel must differ from the channel`);
	const startFrom = d.startFrom ?? DEFAULTS.startFrom;
	if (startFrom !== "all" && startFrom !== "new") throw configError(`${where}: 'startFrom' must be 'all' or 'new'`);
	const handler = d.handler;
	return {
		channel,
		group,
		maxDeliver: positiveInt(where, "maxDeliver", d.maxDeliver, DEFAULTS.maxDeliver, 1000),
		backoff,
		maxInFlight: positiveInt(where, "maxInFlight", d.maxInFlight, DEFAULTS.maxInFlight, 10_000),
		timeout: positiveInt(where, "timeout", d.timeout, DEFAULTS.timeout, 3_600_000),
		deadLetter,
		startFrom,
		handle: msg => run(handler, msg)
	};
}

/** What the Channels middleware (middlewares/channels.middleware.ts) adds to the broker. */
export interface ChannelsBroker {
	sendToChannel(channel: string, payload: unknown, opts?: SendOptions): Promise<SendResult>;
}

/** Stores a message in a channel; resolves once it is stored (on JetStream: acknowledged by the server). */
export function sendToChannel(broker: ServiceBroker, channel: string, payload: unknown, opts?: SendOptions): Promise<SendResult> {
	const send = (broker as Partial<ChannelsBroker>).sendToChannel;
	if (!send) return Promise.reject(configError("sendToChannel needs the Channels middleware (moleculer.config.ts)"));
	return send(channel, payload, opts);
}
