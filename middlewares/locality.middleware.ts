import { Errors, type Context, type ServiceBroker } from "moleculer";
import { unreachable } from "../lib/errors.ts";
import { describeScope, rank, type LocalityStrategyOptions } from "../lib/locality.strategy.ts";
import { SiteProbe } from "../lib/site.probe.ts";
import type { Topology } from "../lib/settings.ts";

export interface LocalityOptions {
	/** Milliseconds between pings to each node in another site; 0 turns the site probe off. Default 1000. */
	probeInterval?: number;
	/** Unanswered pings in a row after which a node in another site is dropped. Default 2. */
	probeMisses?: number;
}

export const DEFAULT_LOCALITY = { probeInterval: 1000, probeMisses: 2 } as const;

interface ActionDef {
	name: string;
	strategyOptions?: LocalityStrategyOptions;
}

type Handler = (ctx: Context) => Promise<unknown>;
type FindEndpoint = ServiceBroker["findNextActionEndpoint"];

/**
 * The runtime half of locality-aware routing (the strategy, lib/locality.strategy.ts, picks endpoints):
 * - runs the site probe (lib/site.probe.ts), which drops unreachable nodes of other sites within seconds;
 * - endpoint resolution (`broker.findNextActionEndpoint`, which `broker.call` uses and moleculer-web calls directly
 *   for HTTP routes) follows Moleculer's convention of returning errors: the strategy's `LATTICE_UNREACHABLE`, thrown
 *   because strategies run synchronously, is returned like the others, and "service not found/available" for an
 *   action that only nodes dropped by the probe served becomes `LATTICE_UNREACHABLE` (503) naming them;
 * - an action that declares `strategyOptions.require` or `within` refuses to run where those do not hold: Moleculer
 *   skips the strategy when an action has a single endpoint, so this is where the rule is kept in that case.
 */
export function LocalityMiddleware(opts: LocalityOptions = {}) {
	const probeOptions = {
		interval: opts.probeInterval ?? DEFAULT_LOCALITY.probeInterval,
		misses: opts.probeMisses ?? DEFAULT_LOCALITY.probeMisses
	};
	let broker: ServiceBroker;
	let probe: SiteProbe;

	/** The error for an action with no endpoint left, when the probe dropped the nodes that served it. */
	function explain(err: Error, action: unknown, nodeID: string | undefined): Error {
		if (
			typeof action !== "string" ||
			!(err instanceof Errors.ServiceNotFoundError || err instanceof Errors.ServiceNotAvailableError) ||
			(broker.registry.getActionEndpoints(action)?.count() ?? 0) > 0
		) {
			return err;
		}
		const nodes = probe.droppedServing(action).filter(id => !nodeID || id === nodeID);
		if (nodes.length === 0) return err;
		const since = Math.min(...nodes.map(id => probe.dropped.get(id) ?? Date.now()));
		return unreachable(`'${action}' is served only by nodes that are unreachable from here (${nodes.join(", ")})`, {
			action,
			nodes,
			since: new Date(since).toISOString()
		});
	}

	return {
		name: "Locality",

		created(b: ServiceBroker) {
			broker = b;
			probe = new SiteProbe(b, probeOptions);
			// Not a middleware hook in Moleculer 0.15, so it is wrapped on the instance.
			const find: FindEndpoint = b.findNextActionEndpoint.bind(b);
			b.findNextActionEndpoint = ((action, callOpts, ctx) => {
				let ep: ReturnType<FindEndpoint>;
				try {
					ep = find(action, callOpts, ctx);
				} catch (err) {
					return err;
				}
				return ep instanceof Error && probe.dropped.size > 0 ? explain(ep, action, callOpts?.nodeID) : ep;
			}) as FindEndpoint;
		},

		started() {
			probe.start();
		},

		stopping() {
			probe.stop();
		},

		localAction(next: Handler, action: ActionDef): Handler {
			const rules = action.strategyOptions;
			if (!rules || (!rules.require && !rules.within)) return next;
			return ctx => {
				const here = broker.metadata as Partial<Topology>;
				const caller = ctx.nodeID === broker.nodeID ? here : broker.registry.nodes.get(ctx.nodeID ?? "")?.metadata;
				// Seen from the caller: is this node one it may use?
				if (rank(caller as Partial<Topology>, here, ctx.nodeID === broker.nodeID, rules) < 0) {
					return Promise.reject(
						unreachable(`'${action.name}' must run on ${describeScope(rules)}; node '${broker.nodeID}' is not one`, {
							action: action.name,
							nodeID: broker.nodeID,
							...rules
						})
					);
				}
				return next(ctx);
			};
		}
	};
}
