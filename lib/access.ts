import type { ActionSchema } from "moleculer";
import { configError, forbidden, unauthorized } from "./errors.ts";

/**
 * Who a call is made for. The gateway puts one in `ctx.meta.user` after verifying a token; Moleculer carries
 * `ctx.meta` to every nested call, on this node and across the cluster.
 */
export interface Principal {
	/** The token's `sub`. */
	id: string;
	username?: string;
	roles: string[];
	/** `"*"` grants everything; `"products:*"` every `products:…` permission. */
	permissions: string[];
}

/** What an action declares about who may call it (all optional; see {@link decide}). */
export interface AccessRule {
	/** Anyone may call it, including anonymous HTTP clients. */
	public?: boolean;
	/** The caller must hold every one of these. */
	permissions?: string[];
	/** The caller must hold at least one of these. */
	roles?: string[];
	/** Services (by full name, e.g. `orders` or `v2.orders`) whose own calls are let through. */
	services?: string[];
}

declare module "moleculer" {
	// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- declaration merging into Moleculer's action schema
	interface ActionSchema extends AccessRule {}
}

export interface CompiledRule {
	readonly action: string;
	readonly service: string;
	readonly public: boolean;
	readonly permissions: readonly string[];
	readonly roles: ReadonlySet<string>;
	readonly services: ReadonlySet<string>;
	/** Nothing declared: any authenticated caller (a user or a service). */
	readonly open: boolean;
}

function stringList(action: string, key: string, value: unknown): string[] {
	if (value === undefined) return [];
	if (!Array.isArray(value) || !value.every(v => typeof v === "string" && v.length > 0)) {
		throw configError(`Action '${action}': '${key}' must be an array of non-empty strings`, { action, key });
	}
	return value as string[];
}

/** Reads an action's declaration once; a malformed one is a startup error, never a silently open action. */
export function compileRule(action: Pick<ActionSchema, keyof AccessRule | "name">, service: string): CompiledRule {
	const name = action.name ?? "?";
	if (action.public !== undefined && typeof action.public !== "boolean") {
		throw configError(`Action '${name}': 'public' must be a boolean`, { action: name });
	}
	const permissions = stringList(name, "permissions", action.permissions);
	const roles = stringList(name, "roles", action.roles);
	const services = stringList(name, "services", action.services);
	return {
		action: name,
		service,
		public: action.public === true,
		permissions,
		roles: new Set(roles),
		services: new Set(services),
		open: permissions.length === 0 && roles.length === 0 && services.length === 0
	};
}

function grants(held: string, wanted: string): boolean {
	if (held === wanted || held === "*") return true;
	return held.endsWith(":*") && wanted.startsWith(held.slice(0, -1));
}

function isPrincipal(u: unknown): u is Principal {
	const p = u as Principal;
	return typeof u === "object" && u !== null && typeof p.id === "string" && Array.isArray(p.roles) && Array.isArray(p.permissions);
}

export type Decision =
	| { allow: true }
	| { allow: false; status: 401 | 403; reason: string };

const ALLOW: Decision = { allow: true };

/**
 * The access decision for one call, in this order:
 * 1. `public` actions are open to everyone.
 * 2. A service calling its own actions, or one listed in `services`, is let through whoever the user is:
 *    the service already decided the outer call.
 * 3. With a user (`ctx.meta.user` a Principal): undeclared actions are open; otherwise every listed permission
 *    and one of the listed roles are needed (403 if not).
 * 4. `ctx.meta.user === null` is the gateway's mark for an anonymous HTTP client (moleculer-web sets it when
 *    there is no token): 401 however deep in the call chain.
 * 5. No user at all but a calling service (`ctx.caller`, set by Moleculer for `ctx.call` inside actions and
 *    event handlers): the service is the principal. Undeclared actions are open to it; declared ones need
 *    the service in `services` (403).
 * 6. Neither: an anonymous call (401).
 */
export function decide(rule: CompiledRule, user: unknown, caller: string | null | undefined): Decision {
	if (rule.public) return ALLOW;
	if (caller && (caller === rule.service || rule.services.has(caller))) return ALLOW;
	if (user !== undefined && user !== null) {
		if (!isPrincipal(user)) return { allow: false, status: 401, reason: "the caller identity is malformed" };
		if (rule.open) return ALLOW;
		if (rule.permissions.length === 0 && rule.roles.size === 0) {
			return { allow: false, status: 403, reason: "only the services it lists may call this action" };
		}
		for (const wanted of rule.permissions) {
			if (!user.permissions.some(held => typeof held === "string" && grants(held, wanted))) {
				return { allow: false, status: 403, reason: `permission '${wanted}' is required` };
			}
		}
		if (rule.roles.size > 0 && !user.roles.some(r => rule.roles.has(r))) {
			return { allow: false, status: 403, reason: `one of the roles ${[...rule.roles].join(", ")} is required` };
		}
		return ALLOW;
	}
	if (user === undefined && caller) {
		if (rule.open) return ALLOW;
		return { allow: false, status: 403, reason: `service '${caller}' may not call this action` };
	}
	return { allow: false, status: 401, reason: "authentication is required" };
}

/** The Moleculer error for a refused decision (401 UNAUTHORIZED or 403 FORBIDDEN, with the action named). */
export function denial(rule: CompiledRule, d: Extract<Decision, { allow: false }>): Error {
	const data = { action: rule.action, reason: d.reason };
	return d.status === 401 ? unauthorized(`Unauthorized: ${d.reason}`, undefined, data) : forbidden(`Forbidden: ${d.reason}`, data);
}
