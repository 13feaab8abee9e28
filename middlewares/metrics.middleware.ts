import { Gauge, collectDefaultMetrics, type Registry } from "prom-client";
import type { ActionSchema, Context, EventSchema, ServiceBroker } from "moleculer";
import { FastCounter, FastGauge, FastHistogram, type CounterChild } from "../lib/fast-metrics.ts";
import { DEFAULT_BUCKETS } from "../lib/metric-buckets.ts";
import type { CacheOutcome } from "../lib/two-level.cacher.ts";

export interface MetricsMiddlewareOptions {
	/** The node's prom-client registry, served at `/metrics` by the ops server. */
	registry: Registry;
	/** Collect prom-client's process, GC, heap and event-loop metrics. Default true. */
	defaultMetrics?: boolean;
	/** Latency buckets in seconds. Default 0.1 ms … 10 s. */
	buckets?: number[];
}

type Handler = (ctx: Context) => Promise<unknown>;
type EventHandler = (ctx: Context) => unknown;

export interface MetricsMiddleware {
	name: string;
	[hook: string]: unknown;
	/** Hand this to the cacher so cache lookups show up next to the requests they served. */
	recordCacheLookup(outcome: CacheOutcome): void;
}

/**
 * RED metrics (rate, errors, duration, in flight) for every action and event handled on this node, plus
 * transporter traffic, cache lookups and circuit-breaker transitions, in the node's prom-client registry. Label
 * values are names and outcomes only (never ids). Per-action and per-event series are bound once when the handler
 * is wrapped (lib/fast-metrics.ts), so a call costs a few field increments and one bucket search.
 */
export function MetricsMiddleware(opts: MetricsMiddlewareOptions): MetricsMiddleware {
	const registers = [opts.registry];
	const buckets = opts.buckets ?? DEFAULT_BUCKETS;

	const requests = new FastCounter({
		name: "moleculer_request_total",
		help: "Actions handled on this node, by outcome",
		labelNames: ["action", "outcome"],
		registers
	});
	const duration = new FastHistogram({
		name: "moleculer_request_duration_seconds",
		help: "Time to handle an action on this node",
		labelNames: ["action"],
		buckets,
		registers
	});
	const errors = new FastCounter({
		name: "moleculer_request_error_total",
		help: "Failed actions by error type",
		labelNames: ["action", "type"],
		registers
	});
	const inFlight = new FastGauge({
		name: "moleculer_request_in_flight",
		help: "Actions being handled on this node right now",
		labelNames: ["action"],
		registers
	});
	const eventsReceived = new FastCounter({
		name: "moleculer_event_received_total",
		help: "Events handled on this node",
		labelNames: ["event", "group"],
		registers
	});
	const eventDuration = new FastHistogram({
		name: "moleculer_event_duration_seconds",
		help: "Time to handle an event on this node",
		labelNames: ["event", "group"],
		buckets,
		registers
	});
	const eventErrors = new FastCounter({
		name: "moleculer_event_error_total",
		help: "Failed event handlers by error type",
		labelNames: ["event", "group", "type"],
		registers
	});
	const eventsInFlight = new FastGauge({
		name: "moleculer_event_in_flight",
		help: "Event handlers running on this node right now",
		labelNames: ["event", "group"],
		registers
	});
	const eventsEmitted = new FastCounter({
		name: "moleculer_event_emitted_total",
		help: "Events emitted or broadcast from this node",
		labelNames: ["event", "kind"],
		registers
	});
	const packetsSent = new FastCounter({
		name: "moleculer_transporter_packets_sent_total",
		help: "Packets sent to the transporter",
		labelNames: ["type"],
		registers
	});
	const bytesSent = new FastCounter({
		name: "moleculer_transporter_bytes_sent_total",
		help: "Bytes sent to the transporter",
		registers
	});
	const packetsReceived = new FastCounter({
		name: "moleculer_transporter_packets_received_total",
		help: "Packets received from the transporter",
		labelNames: ["type"],
		registers
	});
	const bytesReceived = new FastCounter({
		name: "moleculer_transporter_bytes_received_total",
		help: "Bytes received from the transporter",
		registers
	});
	const cacheLookups = new FastCounter({
		name: "lattice_cache_lookups_total",
		help: "Cached-action lookups by where they were answered (l1, l2) or miss",
		labelNames: ["outcome"],
		registers
	});
	const breaker = new FastCounter({
		name: "moleculer_circuit_breaker_transitions_total",
		help: "Circuit-breaker state changes",
		labelNames: ["action", "state"],
		registers
	});

	const bytesOut = bytesSent.labels();
	const bytesIn = bytesReceived.labels();
	// Packet types are a closed set of a dozen names: each series is bound once, not looked up per packet.
	const sentByType = new Map<string, CounterChild>();
	const receivedByType = new Map<string, CounterChild>();
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
			if (opts.defaultMetrics !== false) {
				collectDefaultMetrics({ register: opts.registry });
				// Gauges named *_total break the Prometheus naming rules (promtool check metrics fails on them);
				// the per-type gauges without the suffix carry the same numbers.
				for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) {
					opts.registry.removeSingleMetric(name);
				}
			}
			// `moleculer_namespace`, not `namespace`: scrapers attach the Kubernetes namespace under that name.
			new Gauge({
				name: "lattice_node_info",
				help: "Constant 1, labelled with this node's identity",
				labelNames: ["node_id", "moleculer_namespace", "version"],
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
			const running = inFlight.labels(name);
			return function metricsMiddleware(ctx: Context) {
				const start = performance.now();
				running.inc();
				const p = handler(ctx);
				// Recorded on a side branch; the caller gets the handler's own promise, without an extra microtask hop.
				p.then(
					() => {
						running.dec();
						timer.observe((performance.now() - start) / 1000);
						ok.inc();
					},
					(err: { type?: string; name?: string }) => {
						running.dec();
						timer.observe((performance.now() - start) / 1000);
						failed.inc();
						errors.labels(name, err?.type || err?.name || "Error").inc();
					}
				);
				return p;
			};
		},

		localEvent(handler: EventHandler, event: EventSchema): EventHandler {
			// Moleculer defaults the group to the service name when it registers the handler, after this runs.
			const labels = [event.name ?? "", event.group ?? (event.service as { name?: string } | undefined)?.name ?? ""] as const;
			const received = eventsReceived.labels(...labels);
			const timer = eventDuration.labels(...labels);
			const running = eventsInFlight.labels(...labels);
			return function metricsEventMiddleware(ctx: Context) {
				const start = performance.now();
				received.inc();
				running.inc();
				const p = Promise.resolve(handler(ctx));
				p.then(
					() => {
						running.dec();
						timer.observe((performance.now() - start) / 1000);
					},
					(err: { type?: string; name?: string }) => {
						running.dec();
						timer.observe((performance.now() - start) / 1000);
						eventErrors.labels(...labels, err?.type || err?.name || "Error").inc();
					}
				);
				return p;
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
				const type = meta?.packet?.type ?? "unknown";
				let sent = sentByType.get(type);
				if (!sent) sentByType.set(type, (sent = packetsSent.labels(type)));
				sent.inc();
				bytesOut.inc(data.length);
				return next(topic, data, meta);
			};
		},

		transporterReceive(next: (cmd: string, data: Buffer, s: unknown) => unknown) {
			return (cmd: string, data: Buffer, s: unknown) => {
				let received = receivedByType.get(cmd);
				if (!received) receivedByType.set(cmd, (received = packetsReceived.labels(cmd)));
				received.inc();
				bytesIn.inc(data.length);
				return next(cmd, data, s);
			};
		}
	};
}
