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

/**
 * The protobuf wire format, read field by field: enough to decode an OTLP ExportTraceServiceRequest into the same
 * shape its JSON encoding has, independently of the exporter's own writer. Field numbers are those of
 * opentelemetry/proto/{collector/trace/v1/trace_service,trace/v1/trace,common/v1/common,resource/v1/resource}.proto.
 */
type Field = { n: number; varint?: bigint; bytes?: Uint8Array; fixed64?: Buffer; fixed32?: number };

function fields(buf: Uint8Array): Field[] {
	const out: Field[] = [];
	let i = 0;
	const varint = (): bigint => {
		let v = 0n;
		for (let shift = 0n; ; shift += 7n) {
			const b = buf[i++];
			if (b === undefined) throw new Error("protobuf: truncated varint");
			v |= BigInt(b & 0x7f) << shift;
			if (b < 0x80) return v;
		}
	};
	while (i < buf.length) {
		const key = Number(varint());
		const n = key >>> 3;
		switch (key & 7) {
			case 0:
				out.push({ n, varint: varint() });
				break;
			case 1:
				out.push({ n, fixed64: Buffer.from(buf.subarray(i, (i += 8))) });
				break;
			case 2: {
				const len = Number(varint());
				out.push({ n, bytes: buf.subarray(i, (i += len)) });
				break;
			}
			case 5:
				out.push({ n, fixed32: Buffer.from(buf.subarray(i, (i += 4))).readUInt32LE(0) });
				break;
			default:
				throw new Error(`protobuf: unsupported wire type ${key & 7}`);
		}
		if (i > buf.length) throw new Error("protobuf: truncated field");
	}
	return out;
}

const text = (f: Field) => Buffer.from(f.bytes!).toString("utf8");
const hex = (f: Field) => Buffer.from(f.bytes!).toString("hex");
const all = (fs: Field[], n: number) => fs.filter(f => f.n === n);
const one = (fs: Field[], n: number) => fs.find(f => f.n === n);

function pbAnyValue(buf: Uint8Array): AnyValue {
	const f = fields(buf)[0];
	if (!f) return {};
	switch (f.n) {
		case 1:
			return { stringValue: text(f) };
		case 2:
			return { boolValue: f.varint !== 0n };
		case 3:
			return { intValue: BigInt.asIntN(64, f.varint!).toString() };
		case 4:
			return { doubleValue: f.fixed64!.readDoubleLE(0) };
		case 5:
			return { arrayValue: { values: all(fields(f.bytes!), 1).map(v => pbAnyValue(v.bytes!)) } };
		default:
			return {};
	}
}

function pbAttributes(fs: Field[], n: number): KeyValue[] {
	return all(fs, n).map(kv => {
		const k = fields(kv.bytes!);
		const value = one(k, 2);
		return { key: text(one(k, 1)!), value: value ? pbAnyValue(value.bytes!) : {} };
	});
}

function decodeProtobufRequest(body: Uint8Array): ExportRequest {
	return {
		resourceSpans: all(fields(body), 1).map(rsField => {
			const rs = fields(rsField.bytes!);
			const resource = one(rs, 1);
			return {
				resource: { attributes: resource ? pbAttributes(fields(resource.bytes!), 1) : [] },
				scopeSpans: all(rs, 2).map(ssField => ({
					spans: all(fields(ssField.bytes!), 2).map(spanField => {
						const sp = fields(spanField.bytes!);
						const parent = one(sp, 4);
						const state = one(sp, 3);
						const status = one(sp, 15);
						const st = status ? fields(status.bytes!) : [];
						const message = one(st, 2);
						return {
							traceId: hex(one(sp, 1)!),
							spanId: hex(one(sp, 2)!),
							parentSpanId: parent && parent.bytes!.length ? hex(parent) : undefined,
							traceState: state ? text(state) : undefined,
							name: text(one(sp, 5)!),
							kind: Number(one(sp, 6)?.varint ?? 0n),
							startTimeUnixNano: one(sp, 7)!.fixed64!.readBigUInt64LE(0).toString(),
							endTimeUnixNano: one(sp, 8)!.fixed64!.readBigUInt64LE(0).toString(),
							attributes: pbAttributes(sp, 9),
							status: { code: Number(one(st, 3)?.varint ?? 0n), message: message ? text(message) : undefined },
							events: all(sp, 11).map(e => {
								const ef = fields(e.bytes!);
								return { name: text(one(ef, 2)!), attributes: pbAttributes(ef, 3) };
							})
						};
					})
				}))
			};
		})
	};
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
 * A stand-in OpenTelemetry collector: accepts OTLP/HTTP on POST /v1/traces, protobuf or JSON by content type, and
 * decodes what the exporter really sent, as a collector would read it (hex ids, nanosecond times, typed attributes).
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
			const type = req.headers["content-type"] ?? "";
			requests.push(type);
			const raw = Buffer.concat(chunks);
			const body = /protobuf/.test(type) ? decodeProtobufRequest(raw) : (JSON.parse(raw.toString("utf8")) as ExportRequest);
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
			// An empty ExportTraceServiceResponse: full success, in the request's encoding.
			if (/protobuf/.test(type)) res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
			else res.writeHead(200, { "content-type": "application/json" }).end("{}");
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
