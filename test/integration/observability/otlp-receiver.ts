import http from "node:http";
import type { AddressInfo } from "node:net";
import { waitFor } from "../../support/processes.ts";

/** One span as an OTLP/HTTP JSON export request carried it, with its resource flattened in. */
export interface ReceivedSpan {
	traceId: string;
	spanId: string;
	parentSpanId?: string;
	traceState?: string;
	name: string;
	/** OTLP numbering: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
	kind: number;
	attributes: Record<string, unknown>;
	status: { code?: number; message?: string };
	events: Array<{ name: string; attributes: Record<string, unknown> }>;
	resource: Record<string, unknown>;
	startNs: bigint;
	endNs: bigint;
}

export const OTLP_KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;
export const OTLP_STATUS_ERROR = 2;

interface AnyValue {
	stringValue?: string;
	boolValue?: boolean;
	intValue?: string | number;
	doubleValue?: number;
	arrayValue?: { values?: AnyValue[] };
}

interface KeyValue {
	key: string;
	value: AnyValue;
}

function decodeValue(v: AnyValue): unknown {
	if (v.stringValue !== undefined) return v.stringValue;
	if (v.boolValue !== undefined) return v.boolValue;
	if (v.intValue !== undefined) return Number(v.intValue);
	if (v.doubleValue !== undefined) return v.doubleValue;
	if (v.arrayValue) return (v.arrayValue.values ?? []).map(decodeValue);
	return undefined;
}

function decodeAttributes(list: KeyValue[] | undefined): Record<string, unknown> {
	return Object.fromEntries((list ?? []).map(kv => [kv.key, decodeValue(kv.value)]));
}

interface ExportRequest {
	resourceSpans?: Array<{
		resource?: { attributes?: KeyValue[] };
		scopeSpans?: Array<{
			spans?: Array<{
				traceId: string;
				spanId: string;
				parentSpanId?: string;
				traceState?: string;
				name: string;
				kind: number;
				startTimeUnixNano: string;
				endTimeUnixNano: string;
				attributes?: KeyValue[];
				status?: { code?: number; message?: string };
				events?: Array<{ name: string; attributes?: KeyValue[] }>;
			}>;
		}>;
	}>;
}

export interface OtlpReceiver {
	readonly url: string;
	readonly port: number;
	readonly spans: ReceivedSpan[];
	/** Export requests answered, with their content type. */
	readonly requests: string[];
	trace(traceId: string): ReceivedSpan[];
	/** Waits until the trace has at least `count` spans; returns them. */
	waitForTrace(traceId: string, count: number, timeoutMs?: number): Promise<ReceivedSpan[]>;
	/** Stops listening (connections refused) until `start()`, on the same port. */
	stop(): Promise<void>;
	start(): Promise<void>;
}

/**
 * A stand-in OpenTelemetry collector: accepts OTLP/HTTP JSON on POST /v1/traces and decodes what the exporter
 * really sent, exactly as a collector would read it (hex ids, string nanosecond times, typed attribute values).
 */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
	const spans: ReceivedSpan[] = [];
	const requests: string[] = [];
	let server: http.Server | null = null;
	let port = 0;

	function handle(req: http.IncomingMessage, res: http.ServerResponse) {
		const chunks: Buffer[] = [];
		req.on("data", (c: Buffer) => chunks.push(c));
		req.on("end", () => {
			if (req.method !== "POST" || req.url !== "/v1/traces") {
				res.writeHead(404).end();
				return;
			}
			requests.push(req.headers["content-type"] ?? "");
			const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as ExportRequest;
			for (const rs of body.resourceSpans ?? []) {
				const resource = decodeAttributes(rs.resource?.attributes);
				for (const ss of rs.scopeSpans ?? []) {
					for (const s of ss.spans ?? []) {
						spans.push({
							traceId: s.traceId,
							spanId: s.spanId,
							parentSpanId: s.parentSpanId || undefined,
							traceState: s.traceState || undefined,
							name: s.name,
							kind: s.kind,
							attributes: decodeAttributes(s.attributes),
							status: s.status ?? {},
							events: (s.events ?? []).map(e => ({ name: e.name, attributes: decodeAttributes(e.attributes) })),
							resource,
							startNs: BigInt(s.startTimeUnixNano),
							endNs: BigInt(s.endTimeUnixNano)
						});
					}
				}
			}
			res.writeHead(200, { "content-type": "application/json" }).end("{}");
		});
	}

	async function listen(): Promise<void> {
		const s = http.createServer(handle);
		await new Promise<void>((resolve, reject) => {
			s.once("error", reject);
			s.listen(port, "127.0.0.1", () => resolve());
		});
		port = (s.address() as AddressInfo).port;
		server = s;
	}

	await listen();
	const trace = (traceId: string) => spans.filter(s => s.traceId === traceId);
	return {
		get url() {
			return `http://127.0.0.1:${port}`;
		},
		get port() {
			return port;
		},
		spans,
		requests,
		trace,
		waitForTrace: (traceId, count, timeoutMs = 15_000) =>
			waitFor(() => (trace(traceId).length >= count ? trace(traceId) : null), timeoutMs, `${count} spans of trace ${traceId}`).then(found => found!),
		async stop() {
			const s = server;
			server = null;
			if (!s) return;
			s.closeAllConnections();
			await new Promise<void>(resolve => s.close(() => resolve()));
		},
		start: listen
	};
}
