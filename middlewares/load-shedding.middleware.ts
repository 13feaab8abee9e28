import { Errors, type ActionSchema, type Context, type ServiceBroker } from "moleculer";
import { Counter, Gauge, type Registry } from "prom-client";
import { ErrorType } from "../lib/errors.ts";

export interface LoadSheddingOptions {
	/** Requests this node works on at once; 0 turns shedding off (handlers are left unwrapped). Default 256. */
	concurrency?: number;
	/** Requests allowed to wait for a slot; one more is refused at once. Default 1024. */
	maxQueue?: number;
	/** Longest wait for a slot in ms before the request is refused; 0 waits as long as the queue holds it. Default 1000. */
	maxQueueTime?: number;
	/** prom-client registry for the shed counter and the in-flight and queue gauges. */
	registry?: Registry;
}

export const DEFAULT_LOAD_SHEDDING = { concurrency: 256, maxQueue: 1024, maxQueueTime: 1000 } as const;

type Handler = (ctx: Context) => Promise<unknown>;

interface Waiter {
	admit(): void;
	timer: NodeJS.Timeout | null;
}

/** A FIFO with O(1) push and shift that never holds on to served entries. */
class Queue<T> {
	private items: (T | undefined)[] = [];
	private head = 0;

	get length(): number {
		return this.items.length - this.head;
	}

	push(item: T): void {
		this.items.push(item);
	}

	shift(): T | undefined {
		if (this.head >= this.items.length) return undefined;
		const item = this.items[this.head];
		this.items[this.head++] = undefined;
		if (this.head > 1024 && this.head * 2 > this.items.length) {
			this.items = this.items.slice(this.head);
			this.head = 0;
		}
		return item;
	}

	remove(item: T): void {
		const i = this.items.indexOf(item, this.head);
		if (i === -1) return;
		this.items.splice(i, 1);
	}
}

/**
 * Per-node load shedding: at most `concurrency` requests run at once, up to `maxQueue` more wait (no longer than
 * `maxQueueTime`), and anything beyond is answered at once with a retryable LATTICE_OVERLOADED error (code 503,
 * so the gateway answers 503 and a retry policy can try another replica). Latency stays bounded under overload
 * instead of growing with an unbounded backlog until every request times out.
 *
 * Only work entering the node counts: requests from other nodes and root calls made here. A nested call made by
 * an action already running on this node passes, since holding a slot while waiting for another could deadlock.
 * Moleculer's bulkhead limits each action; this limits the node as a whole.
 */
export function LoadSheddingMiddleware(opts: LoadSheddingOptions = {}) {
	const concurrency = opts.concurrency ?? DEFAULT_LOAD_SHEDDING.concurrency;
	const maxQueue = opts.maxQueue ?? DEFAULT_LOAD_SHEDDING.maxQueue;
	const maxQueueTime = opts.maxQueueTime ?? DEFAULT_LOAD_SHEDDING.maxQueueTime;
	const queue = new Queue<Waiter>();
	let active = 0;
	let broker: ServiceBroker;

	const registers = opts.registry ? [opts.registry] : [];
	const shed = new Counter({
		name: "lattice_load_shed_total",
		help: "Requests refused as overloaded, by reason (queue_full, queue_timeout)",
		labelNames: ["reason"],
		registers
	});
	const full = shed.labels("queue_full");
	const timedOut = shed.labels("queue_timeout");
	new Gauge({
		name: "lattice_load_active",
		help: "Requests holding a load-shedding slot on this node",
		registers,
		collect() {
			this.set(active);
		}
	});
	new Gauge({
		name: "lattice_load_queued",
		help: "Requests waiting for a load-shedding slot on this node",
		registers,
		collect() {
			this.set(queue.length);
		}
	});

	function overloaded(action: string, reason: string): Errors.MoleculerRetryableError {
		return new Errors.MoleculerRetryableError(`Node '${broker.nodeID}' is overloaded (${reason})`, 503, ErrorType.OVERLOADED, {
			nodeID: broker.nodeID,
			action,
			reason
		});
	}

	function release(): void {
		const next = queue.shift();
		if (next) next.admit();
		else active--;
	}

	/** Resolves when a slot is ours; rejects when the queue is full or the wait runs out. */
	function acquire(action: string): Promise<void> {
		if (active < concurrency) {
			active++;
			return Promise.resolve();
		}
		if (queue.length >= maxQueue) {
			full.inc();
			return Promise.reject(overloaded(action, "queue full"));
		}
		return new Promise((resolve, reject) => {
			const waiter: Waiter = {
				// The releasing request hands its slot over, so `active` does not change.
				admit() {
					if (waiter.timer) clearTimeout(waiter.timer);
					resolve();
				},
				timer: null
			};
			if (maxQueueTime > 0) {
				waiter.timer = setTimeout(() => {
					queue.remove(waiter);
					timedOut.inc();
					reject(overloaded(action, "queue wait timed out"));
				}, maxQueueTime);
			}
			queue.push(waiter);
		});
	}

	return {
		name: "LoadShedding",

		created(b: ServiceBroker) {
			broker = b;
		},

		localAction(handler: Handler, action: ActionSchema): Handler {
			if (concurrency <= 0) return handler;
			const name = action.name ?? "";
			function run(ctx: Context): Promise<unknown> {
				let p: Promise<unknown>;
				try {
					p = handler(ctx);
				} catch (err) {
					release();
					return Promise.reject(err);
				}
				// On a side branch: the caller gets the handler's own promise, without extra microtask hops.
				p.then(release, release);
				return p;
			}
			return function loadSheddingMiddleware(ctx: Context) {
				if (ctx.level > 1 && ctx.nodeID === broker.nodeID) return handler(ctx);
				// A free slot, the common case, is taken synchronously.
				if (active < concurrency) {
					active++;
					return run(ctx);
				}
				return acquire(name).then(() => run(ctx));
			};
		}
	};
}
