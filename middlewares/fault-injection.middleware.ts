import { Errors, Utils, type ActionSchema, type Context, type EventSchema } from "moleculer";
import { Counter, type Registry } from "prom-client";
import { configError, ErrorType } from "../lib/errors.ts";

/** Holds a call back before its handler runs. */
export interface DelayFault {
	/** Fixed delay in ms, or `[min, max]` for a uniformly random one. */
	ms: number | [number, number];
	/** Share of matching calls delayed, 0–100. Default 100. */
	percent?: number;
}

/** Fails a call without running its handler. */
export interface AbortFault {
	/** Share of matching calls aborted, 0–100. Default 100. */
	percent?: number;
	/** Error code (the HTTP status at the gateway), 400–599. Default 500. */
	code?: number;
	/** Error type. Default LATTICE_FAULT_INJECTED. */
	type?: string;
	message?: string;
	/** Whether callers' retry policies may retry it. Default: true for codes >= 500, like Moleculer's server errors. */
	retryable?: boolean;
}

/**
 * One fault rule, Istio-style: which handlers it hits and what it does to them. When a call matches several
 * rules, each applies in turn (a delay from one, an abort from another).
 */
export interface FaultRule {
	/** Action or event name, with Moleculer's wildcards (`posts.*`, `**`, `user.?et`). */
	match: string;
	/** Only actions or only events. Default both. */
	kind?: "action" | "event";
	/** Only calls made from a service whose full name matches (ctx.caller, e.g. `v2.greeter`, `api`). */
	caller?: string;
	/** Only calls coming from a node whose id matches (ctx.nodeID). */
	nodeID?: string;
	delay?: DelayFault;
	abort?: AbortFault;
}

export interface FaultInjectionOptions {
	/** Rules; none (the default) leaves every handler unwrapped, so the middleware costs nothing. */
	rules?: FaultRule[];
	/** prom-client registry for `lattice_faults_injected_total`. */
	registry?: Registry;
	/** Source of randomness in [0, 1). Default Math.random; tests pass their own. */
	random?: () => number;
}

type Handler = (ctx: Context) => Promise<unknown>;
/** Moleculer's own event handler type is not exported from its entry point. */
type EventHandler = (ctx: Context) => void | Promise<void>;

/** A rule resolved for one handler: the caller filters left to check per call, and the bound metric children. */
interface Bound {
	rule: FaultRule;
	delayed: { inc(): void } | null;
	aborted: { inc(): void } | null;
}

const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

/**
 * Fault injection for actions and events handled on this node: delays and aborts by name pattern, optionally only
 * for some callers, each with a percentage. It runs on the serving side, innermost, so an injected fault looks to
 * everything else (timeouts, breakers, retries, fallbacks, metrics, callers) exactly like the handler misbehaving.
 * Which rules apply to a handler is decided once when it is wrapped; a handler no rule names is left untouched.
 */
export function FaultInjectionMiddleware(opts: FaultInjectionOptions = {}) {
	const rules = opts.rules ?? [];
	const random = opts.random ?? Math.random;
	const injected = opts.registry
		? new Counter({
				name: "lattice_faults_injected_total",
				help: "Faults injected on purpose by the fault-injection middleware, by handler and fault",
				labelNames: ["name", "fault"],
				registers: [opts.registry]
			})
		: null;

	function bind(name: string, kind: "action" | "event"): Bound[] {
		return rules
			.filter(r => (!r.kind || r.kind === kind) && Utils.match(name, r.match))
			.map(rule => ({
				rule,
				delayed: rule.delay && injected ? injected.labels(name, "delay") : null,
				aborted: rule.abort && injected ? injected.labels(name, "abort") : null
			}));
	}

	function hits(percent: number | undefined): boolean {
		return percent === undefined || percent >= 100 || random() * 100 < percent;
	}

	function delayMs(d: DelayFault): number {
		if (typeof d.ms === "number") return d.ms;
		const [min, max] = d.ms;
		return min + random() * (max - min);
	}

	function abortError(a: AbortFault, name: string): Errors.MoleculerError {
		const code = a.code ?? 500;
		const message = a.message ?? `Fault injected into '${name}'`;
		const type = a.type ?? ErrorType.FAULT_INJECTED;
		const retryable = a.retryable ?? code >= 500;
		return retryable
			? new Errors.MoleculerRetryableError(message, code, type, { name })
			: new Errors.MoleculerError(message, code, type, { name });
	}

	/** The faults this call gets: the total delay, then the abort error if one fires. */
	async function inject(bound: Bound[], name: string, ctx: Context): Promise<void> {
		for (const b of bound) {
			const r = b.rule;
			if (r.caller && !(ctx.caller && Utils.match(ctx.caller, r.caller))) continue;
			if (r.nodeID && !(ctx.nodeID && Utils.match(ctx.nodeID, r.nodeID))) continue;
			if (r.delay && hits(r.delay.percent)) {
				b.delayed?.inc();
				await sleep(delayMs(r.delay));
			}
			if (r.abort && hits(r.abort.percent)) {
				b.aborted?.inc();
				throw abortError(r.abort, name);
			}
		}
	}

	return {
		name: "FaultInjection",

		localAction(handler: Handler, action: ActionSchema): Handler {
			const name = action.name ?? "";
			const bound = bind(name, "action");
			if (bound.length === 0) return handler;
			return function faultInjectionMiddleware(ctx: Context) {
				return inject(bound, name, ctx).then(() => handler(ctx));
			};
		},

		localEvent(handler: EventHandler, event: EventSchema): EventHandler {
			const name = event.name ?? "";
			const bound = bind(name, "event");
			if (bound.length === 0) return handler;
			return function faultInjectionEventMiddleware(ctx: Context) {
				return inject(bound, name, ctx).then(() => handler(ctx));
			};
		}
	};
}

function percentOk(p: unknown): boolean {
	return p === undefined || (typeof p === "number" && p >= 0 && p <= 100);
}

function msOk(ms: unknown): boolean {
	const ok = (n: unknown) => typeof n === "number" && Number.isFinite(n) && n >= 0 && n <= 600_000;
	if (Array.isArray(ms)) return ms.length === 2 && ok(ms[0]) && ok(ms[1]) && (ms[0] as number) <= (ms[1] as number);
	return ok(ms);
}

function optionalString(v: unknown): boolean {
	return v === undefined || (typeof v === "string" && v.length > 0);
}

/** Why a rule is unusable, or null when it is fine. */
function ruleProblem(r: Record<string, unknown>): string | null {
	if (typeof r.match !== "string" || r.match === "") return "`match` must be a non-empty name pattern";
	if (r.kind !== undefined && r.kind !== "action" && r.kind !== "event") return "`kind` must be 'action' or 'event'";
	if (!optionalString(r.caller) || !optionalString(r.nodeID)) return "`caller` and `nodeID` must be non-empty strings";
	if (r.delay === undefined && r.abort === undefined) return "a rule needs `delay`, `abort` or both";
	const known = new Set(["match", "kind", "caller", "nodeID", "delay", "abort"]);
	const unknown = Object.keys(r).filter(k => !known.has(k));
	if (unknown.length) return `unknown field(s) ${unknown.join(", ")}`;
	if (r.delay !== undefined) {
		const d = r.delay as Record<string, unknown>;
		if (typeof d !== "object" || d === null || !msOk(d.ms)) return "`delay.ms` must be ms (0–600000) or [min, max]";
		if (!percentOk(d.percent)) return "`delay.percent` must be 0–100";
	}
	if (r.abort !== undefined) {
		const a = r.abort as Record<string, unknown>;
		if (typeof a !== "object" || a === null) return "`abort` must be an object";
		if (!percentOk(a.percent)) return "`abort.percent` must be 0–100";
		if (a.code !== undefined && !(Number.isInteger(a.code) && (a.code as number) >= 400 && (a.code as number) <= 599)) {
			return "`abort.code` must be an integer 400–599";
		}
		if (!optionalString(a.type) || !optionalString(a.message)) return "`abort.type` and `abort.message` must be non-empty strings";
		if (a.retryable !== undefined && typeof a.retryable !== "boolean") return "`abort.retryable` must be a boolean";
	}
	return null;
}

/** Parses and checks LATTICE_FAULTS (a JSON array of rules); empty or unset means no faults. */
export function parseFaultRules(json: string | undefined): FaultRule[] {
	if (json === undefined || json.trim() === "") return [];
	let parsed: unknown;
	try {
		parsed = JSON.parse(json);
	} catch (err) {
		throw configError(`LATTICE_FAULTS is not valid JSON: ${(err as Error).message}`);
	}
	if (!Array.isArray(parsed)) throw configError("LATTICE_FAULTS must be a JSON array of rules");
	parsed.forEach((r, i) => {
		const problem = typeof r === "object" && r !== null && !Array.isArray(r) ? ruleProblem(r) : "a rule must be an object";
		if (problem) throw configError(`LATTICE_FAULTS rule ${i}: ${problem}`, { rule: r });
	});
	return parsed as FaultRule[];
}
