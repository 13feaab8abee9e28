import { Errors, type ActionSchema, type Context, type Logger, type ServiceBroker } from "moleculer";
import { Stream } from "node:stream";

export interface TimeoutOptions {
	/** How often deadlines are checked, in ms: a call times out at most this much after its deadline. Default 10. */
	resolutionMs?: number;
}

export const DEFAULT_TIMEOUT = { resolutionMs: 10 } as const;

type Handler = (ctx: Context) => Promise<unknown>;

interface Waiting {
	deadline: number;
	settled: boolean;
	/** Dropped once the call settles, so a settled entry waiting to leave its queue holds nothing. */
	ctx: Context | null;
	reject: ((err: Error) => void) | null;
	action: string;
	lane: Lane;
	/** A call to another node: on expiry its pending request is released too. */
	remote: boolean;
}

/** The part of Moleculer 0.15's Transit that holds remote calls waiting for their response. */
interface PendingRequests {
	pendingRequests: Map<string, { reject(err: Error): void }>;
	removePendingRequest(id: string): void;
}

/**
 * Calls waiting with one timeout value. They start in order, so their deadlines are in order too: expiry only ever
 * looks at the head, and settled calls are skipped there instead of being searched for. Settled calls behind a
 * slow one are swept out once they are most of the queue, so memory follows the calls in flight even when the
 * event loop is kept too busy for the timer to run.
 */
class Lane {
	private items: Waiting[] = [];
	private head = 0;
	/** Settled entries in items[head..]. */
	private settledCount = 0;

	push(w: Waiting): void {
		const live = this.items.length - this.head;
		if (live > 1024 && this.settledCount * 2 > live) {
			this.items = this.items.slice(this.head).filter(x => !x.settled);
			this.head = 0;
			this.settledCount = 0;
		}
		this.items.push(w);
	}

	settle(w: Waiting): void {
		if (w.settled) return; // timed out first
		w.settled = true;
		w.ctx = null;
		w.reject = null;
		this.settledCount++;
	}

	/** Removes and returns the calls whose deadline has passed and that are still waiting. */
	expire(now: number, out: Waiting[]): void {
		const items = this.items;
		while (this.head < items.length) {
			const w = items[this.head]!;
			if (!w.settled && w.deadline > now) break;
			this.head++;
			if (w.settled) this.settledCount--;
			else out.push(w);
		}
		if (this.head > 1024 && this.head * 2 > items.length) {
			this.items = items.slice(this.head);
			this.head = 0;
		}
	}

	get empty(): boolean {
		return this.head >= this.items.length;
	}
}

/**
 * Replaces Moleculer's Timeout middleware, with the same semantics (the action's `timeout`, else the call's, else
 * `requestTimeout`; the deadline travels with remote calls; a RequestTimeoutError on expiry) at a fraction of the
 * cost. Moleculer's races every call against its own timer promise: a timer and five promises per call, on the
 * caller and again on the serving node, which measured as the largest single cost of Lattice's presets. Here a
 * call is one promise and an entry in a queue per timeout value; one coarse timer, running only while calls wait,
 * expires the queues' heads.
 */
export function TimeoutMiddleware(opts: TimeoutOptions = {}): { name: string; [hook: string]: unknown } {
	const resolution = opts.resolutionMs ?? DEFAULT_TIMEOUT.resolutionMs;
	const lanes = new Map<number, Lane>();
	let timer: NodeJS.Timeout | null = null;
	let broker: ServiceBroker;
	let logger: Logger;

	function tick(): void {
		const now = Date.now();
		const expired: Waiting[] = [];
		let waiting = false;
		for (const [ms, lane] of lanes) {
			lane.expire(now, expired);
			if (lane.empty) lanes.delete(ms);
			else waiting = true;
		}
		if (!waiting && timer) {
			clearInterval(timer);
			timer = null;
		}
		for (const w of expired) timeOut(w);
	}

	function timeOut(w: Waiting): void {
		const ctx = w.ctx!;
		const reject = w.reject!;
		// Already out of its lane: marked here, not counted there.
		w.settled = true;
		w.ctx = null;
		w.reject = null;
		logger.warn(`Request '${w.action}' is timed out.`, { requestID: ctx.requestID, nodeID: ctx.nodeID, timeout: ctx.options.timeout });
		if (ctx.params instanceof Stream) ctx.params.emit("moleculer-timeout-middleware", ctx.options.timeout);
		const err = new Errors.RequestTimeoutError({ action: w.action, nodeID: ctx.nodeID ?? undefined });
		// Moleculer's own middleware leaves the request pending in the transit until an answer that may never come:
		// the entry leaks, and the context tracker counts the call as in flight, so a stopping node waits the whole
		// shutdown timeout for it. Settling it here releases both.
		if (w.remote) {
			const transit = broker.transit as unknown as PendingRequests | undefined;
			const pending = transit?.pendingRequests.get(ctx.id);
			if (pending) {
				transit!.removePendingRequest(ctx.id);
				pending.reject(err);
			}
		}
		reject(err);
	}

	function laneFor(ms: number): Lane {
		let l = lanes.get(ms);
		if (!l) {
			l = new Lane();
			lanes.set(ms, l);
		}
		return l;
	}

	function wait(w: Waiting): void {
		w.lane.push(w);
		if (!timer) {
			timer = setInterval(tick, resolution);
			timer.unref();
		}
	}

	function wrap(handler: Handler, action: ActionSchema, remote: boolean): Handler {
		const actionTimeout = (action as { timeout?: number }).timeout;
		const name = action.name ?? "";
		return function timeout(ctx: Context) {
			const options = ctx.options as { timeout?: number | null };
			if (options.timeout == null) options.timeout = actionTimeout ?? broker.options.requestTimeout;
			const ms = options.timeout!;
			if (!(ms > 0)) return handler(ctx);
			// Remote and nested calls compute the time left from here (Context#call and the transit).
			if (!ctx.startHrTime) ctx.startHrTime = process.hrtime();
			const p = handler(ctx);
			return new Promise((resolve, reject) => {
				const w: Waiting = { deadline: Date.now() + ms, settled: false, reject, ctx, action: name, lane: laneFor(ms), remote };
				wait(w);
				p.then(
					v => {
						w.lane.settle(w);
						resolve(v);
					},
					(err: Error) => {
						w.lane.settle(w);
						reject(err);
					}
				);
			});
		};
	}

	return {
		name: "Timeout",

		created(b: ServiceBroker) {
			broker = b;
			logger = b.getLogger("timeout");
		},

		stopped() {
			if (timer) clearInterval(timer);
			timer = null;
		},

		localAction: (handler: Handler, action: ActionSchema) => wrap(handler, action, false),
		remoteAction: (handler: Handler, action: ActionSchema) => wrap(handler, action, true)
	};
}
