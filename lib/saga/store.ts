import type { SagaRecord } from "./saga.ts";

/**
 * Where sagas live. Every write names its owner (one orchestrator run) and only succeeds while that owner holds
 * the saga, renewing its lease: an orchestrator that lost a saga to another (its lease ran out) stops at its
 * next write instead of running steps twice at once.
 */
export interface SagaStore {
	/** Durable stores survive the process: a restarted orchestrator finds its unfinished sagas. */
	readonly durable: boolean;
	open(): Promise<void>;
	close(): Promise<void>;
	/** Inserts a new saga held by `owner`; if the id is taken, returns the stored one instead. */
	create(rec: SagaRecord, owner: string, node: string, leaseMs: number): Promise<{ created: boolean; record: SagaRecord }>;
	/** Writes the saga if `owner` still holds it, renewing the lease; false when it does not. */
	save(rec: SagaRecord, owner: string, leaseMs: number): Promise<boolean>;
	get(id: string): Promise<SagaRecord | null>;
	/**
	 * Takes over up to `limit` unfinished sagas of these types that nobody holds: their lease ran out, or their
	 * owner was an earlier run of this node (same node id: that process is gone).
	 */
	claim(types: string[], owner: string, node: string, limit: number, leaseMs: number): Promise<SagaRecord[]>;
	/** Lets go of a saga without changing it, so that the next sweep (here or elsewhere) takes it up. */
	release(id: string, owner: string): Promise<void>;
}

interface Held {
	rec: SagaRecord;
	owner: string | null;
	node: string | null;
	leaseUntil: number;
}

const copy = (r: SagaRecord): SagaRecord => structuredClone(r);

/** Sagas in the process's memory (no DATABASE_URL): steps and compensations still run, but a crash forgets them. */
export class MemorySagaStore implements SagaStore {
	readonly durable = false;
	private readonly sagas = new Map<string, Held>();

	async open(): Promise<void> {}

	async close(): Promise<void> {
		this.sagas.clear();
	}

	async create(rec: SagaRecord, owner: string, node: string, leaseMs: number) {
		const held = this.sagas.get(rec.id);
		if (held) return { created: false, record: copy(held.rec) };
		this.sagas.set(rec.id, { rec: copy(rec), owner, node, leaseUntil: Date.now() + leaseMs });
		return { created: true, record: copy(rec) };
	}

	async save(rec: SagaRecord, owner: string, leaseMs: number): Promise<boolean> {
		const held = this.sagas.get(rec.id);
		if (!held || held.owner !== owner) return false;
		held.rec = copy(rec);
		held.leaseUntil = Date.now() + leaseMs;
		return true;
	}

	async get(id: string): Promise<SagaRecord | null> {
		const held = this.sagas.get(id);
		return held ? copy(held.rec) : null;
	}

	async claim(types: string[], owner: string, node: string, limit: number, leaseMs: number): Promise<SagaRecord[]> {
		const now = Date.now();
		const out: SagaRecord[] = [];
		for (const held of this.sagas.values()) {
			if (out.length >= limit) break;
			const open = held.rec.status === "running" || held.rec.status === "compensating";
			if (!open || !types.includes(held.rec.saga) || held.owner === owner) continue;
			if (held.leaseUntil >= now && held.node !== node) continue;
			Object.assign(held, { owner, node, leaseUntil: now + leaseMs });
			out.push(copy(held.rec));
		}
		return out;
	}

	async release(id: string, owner: string): Promise<void> {
		const held = this.sagas.get(id);
		if (held?.owner === owner) Object.assign(held, { owner: null, node: null, leaseUntil: 0 });
	}
}
