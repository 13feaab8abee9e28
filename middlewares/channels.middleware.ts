import type { ConnectionOptions } from "nats";
import type { Service, ServiceBroker } from "moleculer";
import { Counter, type Registry } from "prom-client";
import {
	resolveSubscription,
	type ChannelAdapter,
	type ChannelsBroker,
	type ChannelsSchema,
	type ChannelStats,
	type Subscription
} from "../lib/channels/channel.ts";
import { JetStreamChannelAdapter } from "../lib/channels/jetstream.adapter.ts";
import { MemoryChannelAdapter } from "../lib/channels/memory.adapter.ts";
import { serviceContext } from "../lib/service-context.ts";
import { traceChannelMessage, traceHeaders } from "../lib/tracer.ts";
import { MemoryReceipts, PostgresReceipts, type ReceiptStore } from "../lib/channels/receipts.ts";

export interface ChannelsMiddlewareOptions {
	/** NATS with JetStream for durable channels; null keeps them in this process's memory (not durable). */
	nats: ConnectionOptions | null;
	/** PostgreSQL for the consumers' receipts (shared by a group across nodes); null keeps them in memory. */
	receipts: { url: string; schema: string } | null;
	/** How long a stream keeps a message, ms. Default 7 days. */
	maxAge?: number;
	/** A resend of an id within this many ms is dropped by the stream. Default 2 minutes. */
	duplicateWindow?: number;
	/** JetStream replicas per stream. Default 1. */
	replicas?: number;
	/** Redelivery to another member when a delivered message is neither acked nor kept alive this long, ms. Default 30 s. */
	ackWait?: number;
	/** prom-client registry for `lattice_channel_messages_total`. */
	registry?: Registry;
}

export const DEFAULT_CHANNELS = { maxAge: 7 * 24 * 3_600_000, duplicateWindow: 120_000, replicas: 1, ackWait: 30_000 } as const;

/**
 * Reliable messaging for services (lib/channels): `broker.sendToChannel(channel, payload, { id })` stores a
 * message; a service that declares `channels: { "<channel>": { group, maxDeliver, backoff, handler(ctx, msg) } }`
 * gets each one once per group. JetStream when `nats` is given, else an in-process fallback with the same
 * semantics that loses everything when the process stops. Handlers run with a context whose calls are made as
 * their service (`ctx.caller`), so actions that list the service in `services` accept them.
 */
export function ChannelsMiddleware(opts: ChannelsMiddlewareOptions) {
	let adapter: ChannelAdapter;
	let receipts: ReceiptStore;
	const subscriptions = new Map<Service, Subscription[]>();
	const messages = opts.registry
		? new Counter({
				name: "lattice_channel_messages_total",
				help: "Channel deliveries by channel, consumer group and outcome (handled, duplicate, retried, dead_lettered)",
				labelNames: ["channel", "group", "outcome"],
				registers: [opts.registry]
			})
		: null;
	const stats: ChannelStats = { record: (channel, group, outcome) => messages?.labels(channel, group, outcome).inc() };

	return {
		name: "Channels",

		created(broker: ServiceBroker) {
			const logger = broker.getLogger("channels");
			receipts = opts.receipts
				? new PostgresReceipts({ ...opts.receipts, retention: (opts.maxAge ?? DEFAULT_CHANNELS.maxAge) + 86_400_000 })
				: new MemoryReceipts();
			adapter = opts.nats
				? new JetStreamChannelAdapter({
						connection: opts.nats,
						namespace: broker.namespace,
						maxAge: opts.maxAge ?? DEFAULT_CHANNELS.maxAge,
						duplicateWindow: opts.duplicateWindow ?? DEFAULT_CHANNELS.duplicateWindow,
						replicas: opts.replicas ?? DEFAULT_CHANNELS.replicas,
						ackWait: opts.ackWait ?? DEFAULT_CHANNELS.ackWait,
						receipts,
						stats,
						logger
					})
				: new MemoryChannelAdapter({ receipts, stats, logger, duplicateWindow: opts.duplicateWindow });
			// The message carries the sender's trace context (lib/tracer.ts), continued by whichever member handles it.
			(broker as ServiceBroker & ChannelsBroker).sendToChannel = (channel, payload, sendOpts) =>
				adapter.send(channel, payload, { ...sendOpts, headers: traceHeaders(sendOpts?.headers) });
		},

		started(broker: ServiceBroker) {
			if (!adapter.durable) {
				broker.getLogger("channels").info("Channels are in process memory: messages not yet handled are lost when the process stops (set TRANSPORTER or LATTICE_CHANNELS_URL to a NATS server with JetStream)");
			}
		},

		/** Declarations are checked when the service is created: a bad one fails `createService`, before anything starts. */
		serviceCreated(service: Service) {
			const declared = (service.schema as { channels?: ChannelsSchema }).channels;
			if (!declared) return;
			const subs = Object.entries(declared).map(([channel, decl]) =>
				resolveSubscription(service, channel, decl, async (handler, msg) => {
					const ctx = serviceContext(service, msg.payload);
					await traceChannelMessage(service.broker, msg, ctx, () => handler.call(service, ctx, msg));
				})
			);
			subscriptions.set(service, subs);
		},

		async serviceStarted(service: Service) {
			for (const sub of subscriptions.get(service) ?? []) await adapter.subscribe(sub);
		},

		async serviceStopping(service: Service) {
			const subs = subscriptions.get(service) ?? [];
			subscriptions.delete(service);
			await Promise.all(subs.map(s => adapter.unsubscribe(s)));
		},

		async stopped() {
			await adapter.close();
			await receipts.close();
		}
	};
}
