import type { Context, Service } from "moleculer";

/**
 * A root context that acts as `service`, for work a service starts on its own (a channel delivery, a saga
 * resumed after a restart): calls made with `ctx.call` carry the service as `ctx.caller`, so actions that list
 * it in `services` accept them, and count as nested calls for the node's load shedding.
 */
export function serviceContext<P>(service: Service, params: P, meta: Record<string, unknown> = {}): Context<P> {
	const ctx = service.broker.ContextFactory.create(service.broker) as Context<P>;
	ctx.setParams(params);
	ctx.meta = meta;
	ctx.caller = service.fullName;
	// Context.create takes the caller of nested calls from the parent context's service.
	ctx.service = service;
	return ctx;
}
