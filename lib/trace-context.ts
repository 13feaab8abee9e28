import { AsyncLocalStorage, AsyncResource } from "node:async_hooks";
import { randomFillSync } from "node:crypto";
import type { Context } from "moleculer";

/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) for Lattice: ids, `traceparent`/`tracestate` parsing
 * and formatting, and the async context that tells any code which span it runs in.
 */

/** The part of a span that crosses process boundaries, and that log lines carry. */
export interface SpanContext {
	/** 32 lowercase hex digits, never all zeros. */
	readonly traceId: string;
	/** 16 lowercase hex digits, never all zeros. */
	readonly spanId: string;
	/** The trace-flags sampled bit: the trace is being recorded somewhere upstream or here. */
	readonly sampled: boolean;
	/** Vendor data, passed on untouched (already validated). */
	readonly traceState?: string;
}

/** What the async context holds: the active span and, inside a handler, the Moleculer context it serves. */
export interface ActiveSpan extends SpanContext {
	ctx: Context | null;
}

const INVALID_TRACE_ID = "00000000000000000000000000000000";
const INVALID_SPAN_ID = "0000000000000000";

// Ids are cut from a pooled CSPRNG buffer turned into hex once per refill (every 512 trace ids): an id then costs
// a string slice instead of a crypto call and a hex conversion.
const POOL_BYTES = 8192;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let poolHex = "";
let poolOffset = POOL_BYTES * 2;

function randomHex(chars: number): string {
	if (poolOffset + chars > poolHex.length) {
		randomFillSync(pool);
		poolHex = pool.toString("hex");
		poolOffset = 0;
	}
	const hex = poolHex.slice(poolOffset, poolOffset + chars);
	poolOffset += chars;
	return hex;
}

// The last trace id made here and its ratio word, read from its random bytes (see ratioWord).
let lastTraceId = "";
let lastTraceWord = 0;

export function newTraceId(): string {
	const id = randomHex(32);
	const at = (poolOffset - 32) >>> 1;
	// Signed reads: unsigned ones above 2³¹ would be heap numbers; the XOR is the same bits.
	const w0 = pool.readInt32BE(at);
	const w1 = pool.readInt32BE(at + 4);
	const w2 = pool.readInt32BE(at + 8);
	const w3 = pool.readInt32BE(at + 12);
	if ((w0 | w1 | w2 | w3) === 0) return newTraceId(); // the all-zero id is invalid
	lastTraceId = id;
	lastTraceWord = (w0 ^ w1 ^ w2 ^ w3) >>> 0;
	return id;
}

export function newSpanId(): string {
	const id = randomHex(16);
	return id === INVALID_SPAN_ID ? newSpanId() : id;
}

/** Hex digit values by char code. A table, not `c < 58 ? … : …`: on random ids that branch is a coin flip the CPU
 * mispredicts half the time, which made the test 3× slower. */
const HEX_VALUE = new Uint8Array(128);
for (let i = 0; i < 16; i++) HEX_VALUE["0123456789abcdef".charCodeAt(i)] = i;

/**
 * What OpenTelemetry's TraceIdRatioBased sampler tests against ratio × 2³²: the trace id's four big-endian 32-bit
 * words XORed, so that Lattice and any OpenTelemetry service decide alike on the same trace. For the id
 * newTraceId() just made (a root, the case that runs per request) it was read from the random bytes, a quarter
 * of the cost of parsing it back from hex; other ids must be valid lowercase hex (made here, or checked by
 * parseTraceparent).
 */
export function ratioWord(traceId: string): number {
	if (traceId === lastTraceId) return lastTraceWord;
	const h = HEX_VALUE;
	let acc = 0;
	for (let i = 0; i < 32; i += 8) {
		const word =
			(h[traceId.charCodeAt(i)]! << 28) |
			(h[traceId.charCodeAt(i + 1)]! << 24) |
			(h[traceId.charCodeAt(i + 2)]! << 20) |
			(h[traceId.charCodeAt(i + 3)]! << 16) |
			(h[traceId.charCodeAt(i + 4)]! << 12) |
			(h[traceId.charCodeAt(i + 5)]! << 8) |
			(h[traceId.charCodeAt(i + 6)]! << 4) |
			h[traceId.charCodeAt(i + 7)]!;
		acc = (acc ^ word) >>> 0;
	}
	return acc;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * Parses a `traceparent` header. Returns null for anything the spec says to ignore (then the receiver starts a
 * new trace): wrong shape, uppercase hex, version ff, all-zero ids, or extra fields on version 00. Versions above
 * 00 are read by their first four fields, as the spec asks.
 */
export function parseTraceparent(value: unknown): SpanContext | null {
	if (typeof value !== "string" || value.length < 55 || value.length > 512) return null;
	const m = TRACEPARENT.exec(value);
	if (!m) return null;
	const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string?];
	if (version === "ff" || (version === "00" && rest !== undefined)) return null;
	if (traceId === INVALID_TRACE_ID || spanId === INVALID_SPAN_ID) return null;
	return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

export function formatTraceparent(sc: SpanContext): string {
	return `00-${sc.traceId}-${sc.spanId}-${sc.sampled ? "01" : "00"}`;
}

// key = simple-key / tenant@system; value = printable ASCII without ',' and '=', not ending in a space.
const TRACESTATE_MEMBER = /^(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/;

/**
 * Validates a `tracestate` header (several headers arrive joined with commas). An invalid or oversized one is
 * dropped whole, which the spec allows; empty members are removed.
 */
export function parseTracestate(value: unknown): string | undefined {
	if (typeof value !== "string" || value.length > 512) return undefined;
	const members = value
		.split(",")
		.map(m => m.trim())
		.filter(Boolean);
	if (members.length === 0 || members.length > 32) return undefined;
	const keys = new Set<string>();
	for (const m of members) {
		if (!TRACESTATE_MEMBER.test(m)) return undefined;
		const key = m.slice(0, m.indexOf("="));
		if (keys.has(key)) return undefined;
		keys.add(key);
	}
	return members.join(",");
}

/** Reads a remote parent from `traceparent`/`tracestate` carriers (HTTP headers, Moleculer packet headers). */
export function extract(headers: Record<string, unknown> | null | undefined): SpanContext | null {
	if (!headers) return null;
	const parent = parseTraceparent(headers.traceparent);
	if (!parent) return null;
	const traceState = parseTracestate(headers.tracestate);
	return traceState ? { ...parent, traceState } : parent;
}

/** Carrier headers that continue the trace after `sc`. */
export function inject(sc: SpanContext, into: Record<string, unknown> = {}): Record<string, unknown> {
	into.traceparent = formatTraceparent(sc);
	if (sc.traceState) into.tracestate = sc.traceState;
	else delete into.tracestate;
	return into;
}

const storage = new AsyncLocalStorage<ActiveSpan>();

/** The span the running code belongs to, if any: set for every action and event handler. */
export function activeSpan(): ActiveSpan | undefined {
	return storage.getStore();
}

/** Runs `fn` with `span` active, for it and everything it schedules. One argument at most: it runs per handled call. */
export function runWithSpan<R>(span: ActiveSpan, fn: () => R): R;
export function runWithSpan<A, R>(span: ActiveSpan, fn: (arg: A) => R, arg: A): R;
export function runWithSpan<A, R>(span: ActiveSpan, fn: (arg?: A) => R, arg?: A): R {
	return storage.run(span, fn, arg);
}

// Made when this module loads, so in the process's root async context, which holds no stores.
const detached = new AsyncResource("lattice.span");

function enterSpan<A, R>(span: ActiveSpan, fn: (arg: A) => R, arg: A): R {
	storage.enterWith(span);
	return fn(arg);
}

/**
 * runWithSpan for work that arrives from another process (a remote call or event) straight from the transporter:
 * `fn` runs in an async context that holds `span` and nothing else, and the caller's context is put back exactly
 * afterwards. The caller there is the transporter's I/O callback, whose context carries nothing of the request (a
 * store set around `broker.start()` would be; it does not reach these handlers). Node 24's run() builds two
 * context frames, the second a copy of the first to restore the caller's store; this builds one from the empty
 * root frame and restores the caller's own: about 50 ns against 230, and the largest single part of tracing's
 * per-call cost on a serving node.
 */
export function runDetachedWithSpan<A, R>(span: ActiveSpan, fn: (arg: A) => R, arg: A): R {
	return detached.runInAsyncScope(enterSpan, null, span, fn, arg) as R;
}

/**
 * Fields that tie a log line to the request it was written for; empty outside handlers. `nodeID` is not here:
 * every Moleculer logger already binds it.
 */
export function logCorrelation(): Record<string, string> | undefined {
	const span = storage.getStore();
	if (!span) return undefined;
	const fields: Record<string, string> = { traceId: span.traceId, spanId: span.spanId };
	const ctx = span.ctx;
	if (ctx) {
		if (ctx.requestID) fields.requestId = ctx.requestID;
		if (ctx.service) fields.service = ctx.service.fullName;
		if (ctx.action?.name) fields.action = ctx.action.name;
		else if (ctx.eventName) fields.event = ctx.eventName;
	}
	return fields;
}
