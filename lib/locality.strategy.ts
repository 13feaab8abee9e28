import { Strategies, type Context, type Endpoint, type Registry, type ServiceBroker } from "moleculer";
import { unreachable } from "./errors.ts";
import type { Topology } from "./settings.ts";

/**
 * How far a call travels, nearest first. A node's tier relative to the caller is the narrowest scope they share:
 * the caller itself, then its site, its zone, its region, then anywhere. Site and zone count only inside the same
 * region (and site inside the same zone), so two regions that both name a site "plant-1" never look adjacent.
 */
export const TIERS = ["node", "site", "zone", "region", "any"] as const;
export type Tier = (typeof TIERS)[number];
export type Role = Topology["role"];

/** Per action (`strategyOptions` in the action schema) or for the whole broker (`registry.strategyOptions`). */
export interface LocalityStrategyOptions {
	/** Only nodes of this role may run the action (e.g. `"cloud"` for what must not run at an edge site). */
	require?: Role;
	/** The widest tier a call may reach (e.g. `"site"` keeps a site's data in the site). Default `"any"`. */
	within?: Tier;
}

const ANY = TIERS.length - 1;
const INELIGIBLE = -1;

type Where = Partial<Topology> | null | undefined;

/** Tier index of `there` seen from `here` (0 = same node is decided by the caller, this starts at site). */
export function tierOf(here: Where, there: Where): number {
	if (!here || !there || here.region !== there.region) return ANY;
	if (here.zone !== there.zone) return 3;
	return here.site === there.site ? 1 : 2;
}

/** Whether a node at `there` may serve a caller at `here` under `opts`; the tier index if so, -1 if not. */
export function rank(here: Where, there: Where, local: boolean, opts: LocalityStrategyOptions): number {
	if (opts.require && there?.role !== opts.require) return INELIGIBLE;
	const tier = local ? 0 : tierOf(here, there);
	return tier > TIERS.indexOf(opts.within ?? "any") ? INELIGIBLE : tier;
}

export function describeScope(opts: LocalityStrategyOptions): string {
	const parts = [];
	if (opts.require) parts.push(`a '${opts.require}' node`);
	if (opts.within && opts.within !== "any") parts.push(`within this ${opts.within}`);
	return parts.join(" ") || "a node";
}

interface NamedEndpoint extends Endpoint {
	action?: { name: string };
	event?: { name: string };
}

/**
 * Locality-aware balancing: the nearest tier that has an available endpoint wins, round-robin inside it.
 * Register it as the broker's strategy (`registry.strategy`) with `preferLocal: false`: the node tier already
 * prefers local endpoints, and Moleculer's own local shortcut would skip `require`/`within`.
 *
 * `select` is on every call's path. Moleculer hands it a freshly filtered array each time, but the endpoints in it
 * only change on registry events, so the winning tier is computed once per distinct list and kept with the list
 * (and each node's metadata object, which Moleculer replaces when a node re-announces itself); a selection then
 * costs one identity comparison per candidate.
 *
 * Fails with `LATTICE_UNREACHABLE` (503) when candidates exist but none is eligible. That error is thrown from
 * inside `broker.call` (Moleculer calls strategies synchronously): the locality middleware turns it into a
 * rejected promise.
 */
export class LocalityStrategy extends Strategies.Base {
	readonly options: LocalityStrategyOptions;
	private counter = 0;
	/** The list the current plan was made for, the metadata objects it saw, and the indexes of the winning tier. */
	private planned: Endpoint[] = [];
	private plannedMeta: unknown[] = [];
	private plannedHere: unknown = null;
	private winners: number[] = [];

	constructor(registry: Registry, broker: ServiceBroker, opts?: LocalityStrategyOptions) {
		super(registry, broker, opts);
		this.options = { ...opts };
		if (this.options.within !== undefined && !TIERS.includes(this.options.within)) {
			throw new TypeError(`strategyOptions.within must be one of ${TIERS.join(", ")}, got '${String(this.options.within)}'`);
		}
	}

	private isPlanned(list: Endpoint[]): boolean {
		const planned = this.planned;
		const meta = this.plannedMeta;
		const n = list.length;
		if (n !== planned.length || this.plannedHere !== this.broker.metadata) return false;
		for (let i = 0; i < n; i++) {
			const ep = list[i]!;
			if (ep !== planned[i] || ep.node.metadata !== meta[i]) return false;
		}
		return true;
	}

	private plan(list: Endpoint[]): void {
		const here = this.broker.metadata as Where;
		let best: number = TIERS.length;
		const winners: number[] = [];
		for (let i = 0; i < list.length; i++) {
			const ep = list[i]!;
			const r = rank(here, ep.node.metadata as Where, ep.local, this.options);
			if (r === INELIGIBLE || r > best) continue;
			if (r < best) {
				best = r;
				winners.length = 0;
			}
			winners.push(i);
		}
		this.planned = list.slice();
		this.plannedMeta = list.map(ep => ep.node.metadata);
		this.plannedHere = this.broker.metadata;
		this.winners = winners;
	}

	select(list: Endpoint[], _ctx?: Context): Endpoint {
		if (!this.isPlanned(list)) this.plan(list);
		const n = this.winners.length;
		if (n === 0) {
			const first = list[0] as NamedEndpoint | undefined;
			const name = first?.action?.name ?? first?.event?.name ?? "?";
			throw unreachable(`No ${describeScope(this.options)} is available for '${name}'`, {
				action: name,
				...this.options,
				candidates: list.map(ep => ep.id)
			});
		}
		if (this.counter >= n) this.counter = 0;
		return list[this.winners[this.counter++]!]!;
	}
}
