import type { ActionHandler, ActionSchema, Context, Middleware, Service } from "moleculer";
import { compileRule, decide, denial } from "../lib/access.ts";

export interface AuthorizationOptions {
	/** Services left alone: Moleculer's internals (`$node`, and any `$`-prefixed service) by default. */
	exempt?: (serviceName: string) => boolean;
}

const internal = (name: string) => name.startsWith("$");

/**
 * Enforces every action's access declaration (`public`, `permissions`, `roles`, `services`; see
 * lib/access.ts) on the node that serves it, for every call: from the gateway, from another service, from
 * another node. The declaration is read once when the action is registered, so a call costs a few set
 * lookups. It must wrap outside the cacher and validator (see moleculer.config.ts): a cached answer or a
 * validation message is already more than a refused caller may get.
 *
 * Trust: the caller identity is `ctx.meta.user` (set by the gateway from a verified token) and `ctx.caller`
 * (set by Moleculer). Both arrive inside packets, so they are only as trustworthy as the transport: Lattice's
 * packet protection (LATTICE_CLUSTER_KEY) makes them unforgeable for anyone outside the cluster.
 */
export function AuthorizationMiddleware(opts: AuthorizationOptions = {}): Middleware {
	const exempt = opts.exempt ?? internal;
	return {
		name: "LatticeAuthorization",

		localAction(next: ActionHandler, action: ActionSchema): ActionHandler {
			const service = action.service;
			// `visibility: "private"` actions are reachable only through the service's own `this.actions`.
			if (!service || exempt(service.name) || action.visibility === "private") return next;
			const rule = compileRule(action, service.fullName);
			return function authorize(this: Service, ctx: Context) {
				const d = decide(rule, (ctx.meta as { user?: unknown }).user, ctx.caller);
				if (d.allow) return next.call(this, ctx);
				return Promise.reject(denial(rule, d));
			};
		}
	};
}
