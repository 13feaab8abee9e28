import type { ServiceBroker } from "moleculer";
import { Counter, type Registry } from "prom-client";
import { configError } from "../lib/errors.ts";

/**
 * How calls to one service are shared between the versions running side by side. A replica's version is its
 * service's `metadata.version`, else its node's (`LATTICE_VERSION`), like a pod's `version` label under a mesh.
 */
export interface TrafficRule {
	/** Service name (without a Moleculer version prefix: the versions share the name). */
	service: string;
	/** Version label → weight (any non-negative numbers; shares are weight / sum). */
	weights: Record<string, number>;
	/**
	 * Where to find the stickiness key, as a path into the call: `meta.user.id`, `params.customerId`. Calls with
	 * the same key always go to the same version (for given weights); calls without one are spread by weight.
	 */
	sticky?: string;
}

export interface TrafficSplitOptions {
	/** No rules (the default): the middleware wraps nothing. */
	rules?: TrafficRule[];
	/** prom-client registry for `lattice_traffic_routed_total`. */
	registry?: Registry;
}

/** `ctx.meta` key that pins a call tree to a version; the gateway sets it from the `x-lattice-version` header. */
export const VERSION_META = "latticeVersion";
export const VERSION_HEADER = "x-lattice-version";

interface Endpoint {
	id: string;
	local: boolean;
	isAvailable: boolean;
	action: { name: string };
	node: { metadata?: { version?: unknown } };
	service: { metadata?: { version?: unknown } };
}

interface EndpointList {
	endpoints: Endpoint[];
}

type WithMeta = { meta?: Record<string, unknown> };
/** `parentCtx` for a nested call, `ctx` for a retry re-using its context. */
type CallOptions = WithMeta & { nodeID?: string; parentCtx?: WithMeta; ctx?: WithMeta };
type Call = (action: string | Endpoint, params?: unknown, opts?: CallOptions) => Promise<unknown>;

interface Compiled {
	rule: TrafficRule;
	/** Versions and their cumulative share boundaries in [0, 1). */
	cuts: { version: string; upTo: number }[];
	keyPath: string[] | null;
	turn: Map<string, number>;
}

/**
 * FNV-1a with murmur3's finalizer: a stable 32-bit hash whose high bits are well spread even for keys that differ
 * in one character (`customer-41`, `customer-42`), so a sticky key lands on the same version on every node.
 */
function hash(text: string): number {
	let h = 0x811c9dc5;
	for (let i = 0; i < text.length; i++) {
		h ^= text.charCodeAt(i);
		h = Math.imul(h, 0x01000193);
	}
	h ^= h >>> 16;
	h = Math.imul(h, 0x85ebca6b);
	h ^= h >>> 13;
	h = Math.imul(h, 0xc2b2ae35);
	h ^= h >>> 16;
	return h >>> 0;
}

function dig(root: unknown, path: string[]): unknown {
	let v = root;
	for (const key of path) {
		if (v === null || typeof v !== "object") return undefined;
		v = (v as Record<string, unknown>)[key];
	}
	return v;
}

function versionOf(ep: Endpoint): string | undefined {
	const v = ep.service?.metadata?.version ?? ep.node?.metadata?.version;
	return v === undefined || v === null ? undefined : String(v);
}

/**
 * Weighted, sticky and pinned routing between versions of a service, for calls and for the gateway alike. It
 * wraps `broker.call`, so it sees every call made on this node (the gateway's included, after authentication,
 * with the call's final params and meta): for a service with a rule it picks the version (pinned by
 * `ctx.meta.latticeVersion`, else by the sticky key's hash, else at random by weight), then an available replica
 * of that version (this node's first, else in turn). A version with no replica left falls back to the others.
 * A call that names a node (`nodeID`) is left alone. Needs Moleculer's balancer (not LATTICE_BROKER_ENFORCED).
 */
export function TrafficSplitMiddleware(opts: TrafficSplitOptions = {}) {
	const rules = new Map<string, Compiled>();
	for (const rule of opts.rules ?? []) {
		const total = Object.values(rule.weights).reduce((a, b) => a + b, 0);
		let acc = 0;
		const cuts = Object.entries(rule.weights).map(([version, w]) => ({ version, upTo: (acc += w) / total }));
		rules.set(rule.service, { rule, cuts, keyPath: rule.sticky ? rule.sticky.split(".") : null, turn: new Map() });
	}
	const routed = new Counter({
		name: "lattice_traffic_routed_total",
		help: "Calls routed by a traffic rule, by service, chosen version and why (pinned, sticky, weighted, fallback)",
		labelNames: ["service", "version", "reason"],
		registers: opts.registry ? [opts.registry] : []
	});
	let broker: ServiceBroker;

	function pick(c: Compiled, name: string, params: unknown, options: CallOptions): Endpoint | null {
		const list = (broker.registry as unknown as { getActionEndpoints(n: string): EndpointList | undefined }).getActionEndpoints(name);
		const available = list?.endpoints.filter(ep => ep.isAvailable) ?? [];
		if (available.length === 0) return null;
		const byVersion = new Map<string, Endpoint[]>();
		for (const ep of available) {
			const v = versionOf(ep);
			if (v === undefined) continue;
			const group = byVersion.get(v) ?? [];
			group.push(ep);
			byVersion.set(v, group);
		}
		const meta = { ...options.parentCtx?.meta, ...options.ctx?.meta, ...options.meta };
		const pinned = meta[VERSION_META];
		let version: string;
		let reason: string;
		if (typeof pinned === "string" && byVersion.has(pinned)) {
			version = pinned;
			reason = "pinned";
		} else {
			const key = c.keyPath ? dig(c.keyPath[0] === "params" ? params : c.keyPath[0] === "meta" ? meta : undefined, c.keyPath.slice(1)) : undefined;
			const point = key === undefined || key === null ? Math.random() : hash(String(key)) / 0x1_0000_0000;
			version = (c.cuts.find(cut => point < cut.upTo) ?? c.cuts.at(-1)!).version;
			reason = key === undefined || key === null ? "weighted" : "sticky";
			if (!byVersion.has(version)) {
				const other = c.cuts.find(cut => byVersion.has(cut.version));
				if (!other) return null;
				version = other.version;
				reason = "fallback";
			}
		}
		routed.labels(c.rule.service, version, reason).inc();
		const group = byVersion.get(version)!;
		const local = group.find(ep => ep.local);
		if (local) return local;
		const i = (c.turn.get(version) ?? 0) % group.length;
		c.turn.set(version, i + 1);
		return group[i]!;
	}

	return {
		name: "TrafficSplit",

		created(b: ServiceBroker) {
			broker = b;
		},

		call(next: Call): Call {
			if (rules.size === 0) return next;
			return function trafficSplit(action, params, options = {}) {
				const name = typeof action === "string" ? action : action.action?.name;
				const dot = name ? name.lastIndexOf(".") : -1;
				const c = dot > 0 ? rules.get(name!.slice(0, dot)) : undefined;
				if (!c || options.nodeID) return next(action, params, options);
				return next(pick(c, name!, params, options) ?? action, params, options);
			};
		}
	};
}

/** Parses and checks LATTICE_TRAFFIC (a JSON array of rules); empty or unset means none. */
export function parseTrafficRules(json: string | undefined): TrafficRule[] {
	if (json === undefined || json.trim() === "") return [];
	let parsed: unknown;
	try {
		parsed = JSON.parse(json);
	} catch (err) {
		throw configError(`LATTICE_TRAFFIC is not valid JSON: ${(err as Error).message}`);
	}
	if (!Array.isArray(parsed)) throw configError("LATTICE_TRAFFIC must be a JSON array of rules");
	const seen = new Set<string>();
	parsed.forEach((r: Partial<TrafficRule>, i) => {
		const bad = (why: string) => configError(`LATTICE_TRAFFIC rule ${i}: ${why}`, { rule: r });
		if (typeof r !== "object" || r === null) throw bad("a rule must be an object");
		if (typeof r.service !== "string" || !/^[\w-]+$/.test(r.service)) throw bad("`service` must be a service name");
		if (seen.has(r.service)) throw bad(`a second rule for '${r.service}'`);
		seen.add(r.service);
		const weights = r.weights as Record<string, unknown> | undefined;
		if (typeof weights !== "object" || weights === null || Object.keys(weights).length === 0) throw bad("`weights` must map versions to weights");
		const values = Object.values(weights);
		if (!values.every(w => typeof w === "number" && Number.isFinite(w) && w >= 0) || !values.some(w => (w as number) > 0)) {
			throw bad("weights must be non-negative numbers, at least one above 0");
		}
		if (r.sticky !== undefined && (typeof r.sticky !== "string" || !/^(meta|params)(\.[\w$-]+)+$/.test(r.sticky))) {
			throw bad("`sticky` must be a path like meta.user.id or params.customerId");
		}
		const unknown = Object.keys(r).filter(k => !["service", "weights", "sticky"].includes(k));
		if (unknown.length) throw bad(`unknown field(s) ${unknown.join(", ")}`);
	});
	return parsed as TrafficRule[];
}
