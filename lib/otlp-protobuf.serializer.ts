import type { AttributeValue, Attributes, HrTime } from "@opentelemetry/api";
import type { ReadableSpan, TimedEvent } from "@opentelemetry/sdk-trace";
import { ProtobufTraceSerializer, type IExportTraceServiceResponse, type ISerializer } from "@opentelemetry/otlp-transformer";

/**
 * OTLP/protobuf encoding of finished spans (an ExportTraceServiceRequest), byte for byte what OpenTelemetry's
 * ProtobufTraceSerializer writes (test/unit/lib/otlp-protobuf.serializer.test.ts compares them), for the OTLP
 * exporter's own transport. Why not that serializer: on a serving node at 10 % sampling, encoding was the largest
 * part of tracing's cost after the async context (about 4 µs a sampled span in a profile). It measures every
 * message in a first pass and writes it in a second, converts each hex id into a new Uint8Array with a branch per
 * digit, and writes every attribute key a character at a time. This writes once into one buffer (a message's
 * length goes in front when it ends, moving the message only if the length needs more than the byte kept for it),
 * writes hex ids natively, and copies attribute keys, a closed set, from bytes encoded once.
 */

const SPAN_FLAGS_HAS_IS_REMOTE = 0x100;
const SPAN_FLAGS_IS_REMOTE = 0x200;
const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;
// Spans from one tracer use a handful of attribute keys; past this many distinct ones, new keys are not kept.
const MAX_CACHED_KEYS = 1024;

/** Wire types. */
const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const FIXED32 = 5;

class Writer {
	buf: Buffer;
	pos = 0;
	private readonly keys: Map<string, Buffer>;

	constructor(size: number, keys: Map<string, Buffer>) {
		this.buf = Buffer.allocUnsafe(Math.max(size, 256));
		this.keys = keys;
	}

	ensure(n: number): void {
		if (this.pos + n <= this.buf.length) return;
		const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
		this.buf.copy(grown, 0, 0, this.pos);
		this.buf = grown;
	}

	/** A field key: one byte below field 16, two from there (the span's flags are field 16). */
	tag(field: number, wire: number): void {
		const key = (field << 3) | wire;
		this.ensure(2);
		if (key < 128) this.buf[this.pos++] = key;
		else {
			this.buf[this.pos++] = (key & 127) | 128;
			this.buf[this.pos++] = key >>> 7;
		}
	}

	varint(value: number): void {
		this.ensure(10);
		const b = this.buf;
		if (value >= 0 && value <= 0xffff_ffff) {
			let v = value >>> 0;
			while (v > 127) {
				b[this.pos++] = (v & 127) | 128;
				v >>>= 7;
			}
			b[this.pos++] = v;
			return;
		}
		// 64-bit two's complement, as protobuf encodes int64.
		const abs = Math.abs(value);
		let low = abs >>> 0;
		let high = (abs / 0x1_0000_0000) >>> 0;
		if (value < 0) {
			low = ~low >>> 0;
			high = ~high >>> 0;
			low = (low + 1) >>> 0;
			if (low === 0) high = (high + 1) >>> 0;
		}
		while (high > 0 || low > 127) {
			b[this.pos++] = (low & 127) | 128;
			low = ((low >>> 7) | (high << 25)) >>> 0;
			high >>>= 7;
		}
		b[this.pos++] = low & 127;
	}

	fixed32(v: number): void {
		this.ensure(4);
		this.buf.writeUInt32LE(v >>> 0, this.pos);
		this.pos += 4;
	}

	/** HrTime as unix nanoseconds (fixed64), split so that no step exceeds 2⁵³. */
	hrTime(t: HrTime): void {
		const [seconds, nanos] = t;
		const fromLow16 = (seconds & 0xffff) * 1e9;
		const fromHigh = ((seconds / 0x1_0000) >>> 0) * 1e9;
		const low = (fromLow16 >>> 0) + (((fromHigh & 0xffff) * 0x1_0000) >>> 0) + nanos;
		const high = Math.floor(fromLow16 / 0x1_0000_0000) + ((fromHigh / 0x1_0000) >>> 0) + Math.floor(low / 0x1_0000_0000);
		this.ensure(8);
		this.buf.writeUInt32LE(low >>> 0, this.pos);
		this.buf.writeUInt32LE(high >>> 0, this.pos + 4);
		this.pos += 8;
	}

	double(v: number): void {
		this.ensure(8);
		this.buf.writeDoubleLE(v, this.pos);
		this.pos += 8;
	}

	string(s: string): void {
		const n = s.length;
		// ASCII, the usual case, a byte per character; anything else through the native UTF-8 encoder.
		this.ensure(n + 5);
		const start = this.pos;
		if (n < 128) {
			const b = this.buf;
			let p = start + 1;
			for (let i = 0; i < n; i++) {
				const c = s.charCodeAt(i);
				if (c > 127) return this.utf8(s);
				b[p++] = c;
			}
			b[start] = n;
			this.pos = p;
			return;
		}
		this.utf8(s);
	}

	private utf8(s: string): void {
		const len = Buffer.byteLength(s);
		this.varint(len);
		this.ensure(len);
		this.pos += this.buf.write(s, this.pos, len, "utf8");
	}

	/** A hex id as bytes (length-delimited). */
	hex(id: string): void {
		const len = id.length >>> 1;
		this.ensure(len + 1);
		this.buf[this.pos++] = len;
		this.pos += this.buf.write(id, this.pos, len, "hex");
	}

	bytes(v: Uint8Array): void {
		this.varint(v.length);
		this.ensure(v.length);
		this.buf.set(v, this.pos);
		this.pos += v.length;
	}

	/** An attribute key: its length-delimited bytes, encoded once. */
	key(k: string): void {
		let encoded = this.keys.get(k);
		if (!encoded) {
			const len = Buffer.byteLength(k);
			const head = len < 128 ? 1 : len < 16384 ? 2 : 3;
			encoded = Buffer.allocUnsafe(head + len);
			let v = len;
			let p = 0;
			while (v > 127) {
				encoded[p++] = (v & 127) | 128;
				v >>>= 7;
			}
			encoded[p++] = v;
			encoded.write(k, p, "utf8");
			if (this.keys.size < MAX_CACHED_KEYS) this.keys.set(k, encoded);
		}
		this.ensure(encoded.length);
		encoded.copy(this.buf, this.pos);
		this.pos += encoded.length;
	}

	/** Opens a length-delimited message: one byte is kept for its length. Returns where it starts. */
	open(): number {
		this.ensure(1);
		return this.pos++;
	}

	/** Closes the message opened at `at`, writing its length there and moving it if the length needs more bytes. */
	close(at: number): void {
		const len = this.pos - at - 1;
		if (len < 128) {
			this.buf[at] = len;
			return;
		}
		const size = len < 16384 ? 2 : len < 2097152 ? 3 : len < 268435456 ? 4 : 5;
		this.ensure(size - 1);
		this.buf.copyWithin(at + size, at + 1, this.pos);
		this.pos += size - 1;
		let v = len;
		let p = at;
		while (v > 127) {
			this.buf[p++] = (v & 127) | 128;
			v >>>= 7;
		}
		this.buf[p] = v;
	}
}

function writeAnyValue(w: Writer, value: AttributeValue | Uint8Array | Record<string, unknown> | unknown): void {
	switch (typeof value) {
		case "string":
			w.tag(1, LEN);
			w.string(value);
			return;
		case "boolean":
			w.tag(2, VARINT);
			w.varint(value ? 1 : 0);
			return;
		case "number":
			if (Number.isInteger(value) && value >= MIN_INT64 && value < MAX_INT64) {
				w.tag(3, VARINT);
				w.varint(value);
			} else {
				w.tag(4, FIXED64);
				w.double(value);
			}
			return;
	}
	if (value instanceof Uint8Array) {
		w.tag(7, LEN);
		w.bytes(value);
	} else if (Array.isArray(value)) {
		w.tag(5, LEN);
		const array = w.open();
		for (const item of value) {
			w.tag(1, LEN);
			const at = w.open();
			writeAnyValue(w, item);
			w.close(at);
		}
		w.close(array);
	} else if (typeof value === "object" && value !== null) {
		// A KeyValueList: its entries are KeyValues in field 1, as attributes are.
		w.tag(6, LEN);
		const list = w.open();
		writeAttributes(w, value as Attributes, 1);
		w.close(list);
	}
}

function writeAttributes(w: Writer, attributes: Attributes, field: number): void {
	for (const k in attributes) {
		if (!Object.hasOwn(attributes, k)) continue;
		w.tag(field, LEN);
		const kv = w.open();
		w.tag(1, LEN);
		w.key(k);
		w.tag(2, LEN);
		const value = w.open();
		writeAnyValue(w, attributes[k]);
		w.close(value);
		w.close(kv);
	}
}

function writeEvent(w: Writer, e: TimedEvent): void {
	const at = w.open();
	w.tag(1, FIXED64);
	w.hrTime(e.time);
	w.tag(2, LEN);
	w.string(e.name);
	if (e.attributes) writeAttributes(w, e.attributes, 3);
	w.tag(4, VARINT);
	w.varint(e.droppedAttributesCount || 0);
	w.close(at);
}

function writeSpan(w: Writer, span: ReadableSpan): void {
	const at = w.open();
	const ctx = span.spanContext();
	w.tag(1, LEN);
	w.hex(ctx.traceId);
	w.tag(2, LEN);
	w.hex(ctx.spanId);
	const traceState = ctx.traceState?.serialize();
	if (traceState) {
		w.tag(3, LEN);
		w.string(traceState);
	}
	const parent = span.parentSpanContext;
	if (parent?.spanId) {
		w.tag(4, LEN);
		w.hex(parent.spanId);
	}
	w.tag(5, LEN);
	w.string(span.name);
	const kind = span.kind == null ? 0 : span.kind + 1;
	if (kind !== 0) {
		w.tag(6, VARINT);
		w.varint(kind);
	}
	w.tag(7, FIXED64);
	w.hrTime(span.startTime);
	w.tag(8, FIXED64);
	w.hrTime(span.endTime);
	if (span.attributes) writeAttributes(w, span.attributes, 9);
	w.tag(10, VARINT);
	w.varint(span.droppedAttributesCount);
	for (const e of span.events) {
		w.tag(11, LEN);
		writeEvent(w, e);
	}
	w.tag(12, VARINT);
	w.varint(span.droppedEventsCount);
	for (const link of span.links) {
		w.tag(13, LEN);
		const l = w.open();
		w.tag(1, LEN);
		w.hex(link.context.traceId);
		w.tag(2, LEN);
		w.hex(link.context.spanId);
		const linkState = link.context.traceState?.serialize();
		if (linkState) {
			w.tag(3, LEN);
			w.string(linkState);
		}
		if (link.attributes) writeAttributes(w, link.attributes, 4);
		w.tag(5, VARINT);
		w.varint(link.droppedAttributesCount || 0);
		w.tag(6, FIXED32);
		w.fixed32(spanFlags(link.context.traceFlags, link.context.isRemote));
		w.close(l);
	}
	w.tag(14, VARINT);
	w.varint(span.droppedLinksCount);
	w.tag(15, LEN);
	const status = w.open();
	if (span.status.message) {
		w.tag(2, LEN);
		w.string(span.status.message);
	}
	w.tag(3, VARINT);
	w.varint(span.status.code);
	w.close(status);
	w.tag(16, FIXED32);
	w.fixed32(spanFlags(ctx.traceFlags, parent?.isRemote));
	w.close(at);
}

function spanFlags(traceFlags: number, isRemote: boolean | undefined): number {
	return (traceFlags & 0xff) | SPAN_FLAGS_HAS_IS_REMOTE | (isRemote ? SPAN_FLAGS_IS_REMOTE : 0);
}

type Scope = ReadableSpan["instrumentationScope"] & { attributes?: Attributes; droppedAttributesCount?: number };

/** Spans by resource, then by instrumentation scope, both by identity and in first-seen order, as OpenTelemetry groups them. */
function group(spans: ReadableSpan[]): Map<ReadableSpan["resource"], Map<Scope, ReadableSpan[]>> {
	const byResource = new Map<ReadableSpan["resource"], Map<Scope, ReadableSpan[]>>();
	for (const span of spans) {
		let byScope = byResource.get(span.resource);
		if (!byScope) byResource.set(span.resource, (byScope = new Map()));
		let list = byScope.get(span.instrumentationScope);
		if (!list) byScope.set(span.instrumentationScope, (list = []));
		list.push(span);
	}
	return byResource;
}

/**
 * Encodes a batch into a buffer of its own: the exporter keeps it to retry, while the next batch is encoded.
 * `keys` caches encoded attribute keys across batches.
 */
export function encodeSpans(spans: ReadableSpan[], keys = new Map<string, Buffer>()): Uint8Array {
	const w = new Writer(spans.length * 320, keys);
	for (const [resource, byScope] of group(spans)) {
		w.tag(1, LEN);
		const rs = w.open();
		w.tag(1, LEN);
		const res = w.open();
		writeAttributes(w, resource.attributes, 1);
		w.tag(2, VARINT);
		w.varint(0);
		w.close(res);
		for (const [scope, list] of byScope) {
			w.tag(2, LEN);
			const ss = w.open();
			w.tag(1, LEN);
			const sc = w.open();
			w.tag(1, LEN);
			w.string(scope.name);
			if (scope.version) {
				w.tag(2, LEN);
				w.string(scope.version);
			}
			if (scope.attributes) writeAttributes(w, scope.attributes, 3);
			if (scope.droppedAttributesCount) {
				w.tag(4, VARINT);
				w.varint(scope.droppedAttributesCount);
			}
			w.close(sc);
			for (const span of list) {
				w.tag(2, LEN);
				writeSpan(w, span);
			}
			if (scope.schemaUrl) {
				w.tag(3, LEN);
				w.string(scope.schemaUrl);
			}
			w.close(ss);
		}
		if (resource.schemaUrl) {
			w.tag(3, LEN);
			w.string(resource.schemaUrl);
		}
		w.close(rs);
	}
	return w.buf.subarray(0, w.pos);
}

/** The serializer for OpenTelemetry's OTLP/HTTP export delegate; responses are decoded by OpenTelemetry's own. */
export function createOtlpProtobufTraceSerializer(): ISerializer<ReadableSpan[], IExportTraceServiceResponse> {
	const keys = new Map<string, Buffer>();
	return {
		serializeRequest: spans => encodeSpans(spans, keys),
		deserializeResponse: data => ProtobufTraceSerializer.deserializeResponse(data)
	};
}
