import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from "prom-client";
import type { ActionSchema, Context, EventSchema, ServiceBroker } from "moleculer";
import type { CacheOutcome } from "../lib/two-level.cacher.ts";

export interface MetricsMiddlewareOptions {
	/** The node's prom-client registry, served at `/metrics` by the ops server. */
	registry: Registry;
	/** Collect prom-client's process, GC, heap and event-loop metrics. Default true. */
	defaultMetrics?: boolean;
	/** Latency buckets in seconds. Default 0.1 ms … 10 s. */
	buckets?: number[];
}

export const DEFAULT_BUCKETS = [
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
];

type Handler = (ctx: Context) => Promise<unknown>;
type EventHandler = (ctx: Context) => unknown;

export interface MetricsMiddleware {
	name: string;
	[hook: string]: unknown;
	/** Hand this to the cacher so cache lookups show up next to the requests they served. */
	recordCacheLookup(outcome: CacheOutcome): void;
}

/**
 * RED metrics for every action and event handled on this node, plus transporter traffic, cache lookups and
 * circuit-breaker transitions, straight into prom-client. Label values are names and outcomes only (never ids),
 * and per-action label children are bound once when the handler is wrapped, so a call costs one histogram
 * observation and one counter increment.
 */
export function MetricsMiddleware(opts: MetricsMiddlewareOptions): MetricsMiddleware {
	const registers = [opts.registry];
	const buckets = opts.buckets ?? DEFAULT_BUCKETS;

	const requests = new Counter({
		name: "moleculer_request_total",
		help: "Actions handled on this node, by outcome",
		labelNames: ["action", "outcome"],
		registers
	});
	const duration = new Histogram({
		name: "moleculer_request_duration_seconds",
		help: "Time to handle an action on this node",
		labelNames: ["action"],
		buckets,
		registers
	});
	const errors = new Counter({
		name: "moleculer_request_error_total",
		help: "Failed actions by error type",
		labelNames: ["action", "type"],
		registers
	});
	const inFlight = new Gauge({
		name: "moleculer_request_in_flight",
		help: "Actions being handled on this node right now",
		registers
	});
	const eventsReceived = new Counter({
		name: "moleculer_event_received_total",
		help: "Events handled on this node",
		labelNames: ["event", "group"],
		registers
	});
	const eventsEmitted = new Counter({
		name: "moleculer_event_emitted_total",
		help: "Events emitted or broadcast from this node",
		labelNames: ["event", "kind"],
		registers
	});
	const packetsSent = new Counter({
		name: "moleculer_transporter_packets_sent_total",
		help: "Packets sent to the transporter",
		labelNames: ["type"],
		registers
	});
	const bytesSent = new Counter({
		name: "moleculer_transporter_bytes_sent_total",
		help: "Bytes sent to the transporter",
		registers
	});
	const packetsReceived = new Counter({
		name: "moleculer_transporter_packets_received_total",
		help: "Packets received from the transporter",
		labelNames: ["type"],
		registers
	});
	const bytesReceived = new Counter({
		name: "moleculer_transporter_bytes_received_total",
		help: "Bytes received from the transporter",
		registers
	});
	const cacheLookups = new Counter({
		name: "lattice_cache_lookups_total",
		help: "Cached-action lookups by where they were answered (l1, l2) or miss",
		labelNames: ["outcome"],
		registers
	});
	const breaker = new Counter({
		name: "moleculer_circuit_breaker_transitions_total",
		help: "Circuit-breaker state changes",
		labelNames: ["action", "state"],
		registers
	});

	const cacheChildren = {
		l1: cacheLookups.labels("l1"),
		l2: cacheLookups.labels("l2"),
		miss: cacheLookups.labels("miss"),
		l2_error: cacheLookups.labels("l2_error")
	};

	return {
		name: "LatticeMetrics",

		recordCacheLookup(outcome: CacheOutcome) {
			cacheChildren[outcome].inc();
		},

		created(broker: ServiceBroker) {
			if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: opts.registry });
			new Gauge({
				name: "lattice_node_info",
				help: "Constant 1, labelled with this node's identity",
				labelNames: ["node_id", "namespace", "version"],
				registers
			})
				.labels(broker.nodeID, broker.namespace || "", broker.MOLECULER_VERSION)
				.set(1);
			for (const state of ["opened", "half-opened", "closed"]) {
				broker.localBus.on(`$circuit-breaker.${state}`, (payload: { action?: string }) =>
					breaker.labels(payload?.action ?? "", state).inc()
				);
			}
		},

		localAction(handler: Handler, action: ActionSchema): Handler {
			const name = action.name ?? "";
			const ok = requests.labels(name, "success");
			const failed = requests.labels(name, "error");
			const timer = duration.labels(name);
			return function metricsMiddleware(ctx: Context) {
				const start = performance.now();
				inFlight.inc();
				return handler(ctx).then(
					result => {
						inFlight.dec();
						timer.observe((performance.now() - start) / 1000);
						ok.inc();
						return result;
					},
					(err: { type?: string; name?: string }) => {
						inFlight.dec();
						timer.observe((performance.now() - start) / 1000);
						failed.inc();
						errors.labels(name, err?.type || err?.name || "Error").inc();
						throw err;
					}
				);
			};
		},

		localEvent(handler: EventHandler, event: EventSchema): EventHandler {
			const child = eventsReceived.labels(event.name ?? "", event.group ?? "");
			return function metricsEventMiddleware(ctx: Context) {
				child.inc();
				return handler(ctx);
			};
		},

		emit(next: (...args: unknown[]) => unknown) {
			return (eventName: string, ...rest: unknown[]) => {
				eventsEmitted.labels(eventName, "emit").inc();
				return next(eventName, ...rest);
			};
		},

		broadcast(next: (...args: unknown[]) => unknown) {
			return (eventName: string, ...rest: unknown[]) => {
				eventsEmitted.labels(eventName, "broadcast").inc();
				return next(eventName, ...rest);
			};
		},

		transporterSend(next: (topic: string, data: Buffer, meta: { packet?: { type?: string } }) => unknown) {
			return (topic: string, data: Buffer, meta: { packet?: { type?: string } }) => {
				packetsSent.labels(meta?.packet?.type ?? "unknown").inc();
				bytesSent.inc(data.length);
				return next(topic, data, meta);
			};
		},

		transporterReceive(next: (cmd: string, data: Buffer, s: unknown) => unknown) {
			return (cmd: string, data: Buffer, s: unknown) => {
				packetsReceived.labels(cmd).inc();
				bytesReceived.inc(data.length);
				return next(cmd, data, s);
			};
		}
	};
}
