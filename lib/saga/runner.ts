import type { Context } from "moleculer";
import { Errors } from "moleculer";
import { ErrorType } from "../errors.ts";
import { SAGA_DEFAULTS, type SagaDefinition, type SagaEvent, type SagaRecord, type SagaStep, type StepContext } from "./saga.ts";
import type { SagaStore } from "./store.ts";

export interface RunnerOptions<D> {
	/** `<service>.<name>`. */
	type: string;
	def: SagaDefinition<D>;
	store: SagaStore;
	/** This orchestrator run: `<nodeID>/<random>`. */
	owner: string;
	node: string;
	leaseMs: number;
	/** First delay between attempts of a step, doubled each time, ms. */
	retryDelay: number;
	logger: { info(...args: unknown[]): void; warn(...args: unknown[]): void };
}

/** Another orchestrator holds the saga now (this one's lease ran out): stop touching it. */
class LeaseLost extends Error {}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

function retryable(err: unknown): boolean {
	return (err as { retryable?: boolean }).retryable === true;
}

function describe(err: unknown): { message: string; type?: string; code?: number } {
	const e = err as { message?: string; type?: string; code?: number };
	return { message: String(e?.message ?? err).slice(0, 1000), type: e?.type, code: typeof e?.code === "number" ? e.code : undefined };
}

function withTimeout<T>(p: Promise<T>, ms: number, saga: string, step: string): Promise<T> {
	let timer: NodeJS.Timeout;
	return Promise.race([
		p,
		new Promise<never>((_, reject) => {
			timer = setTimeout(
				() => reject(new Errors.MoleculerRetryableError(`Saga step '${step}' timed out after ${ms} ms`, 504, ErrorType.SAGA_STEP_TIMEOUT, { saga, step })),
				ms
			);
		})
	]).finally(() => clearTimeout(timer));
}

/**
 * Runs sagas of one type. State is written ahead of every step (`attempted` first, so a crash in the middle of
 * a step still compensates it) and after it; every write checks this run still holds the saga.
 *
 * - A step that fails with a retryable error (5xx, timeout) is tried again with the same key, up to its
 *   `retries`; then, or at once for any other error, the saga turns to compensation.
 * - Compensation undoes every attempted step, last first, each retried until it succeeds; one that keeps
 *   failing leaves the saga `compensating` and lets go of it, and the next sweep tries again.
 * - A resumed saga carries on where it was: the interrupted step is run again (same key, so at most once in
 *   effect) unless the saga is past its deadline, then it is compensated.
 */
export class SagaRunner<D extends object> {
	private readonly o: RunnerOptions<D>;
	private readonly steps: SagaStep<D>[];

	constructor(opts: RunnerOptions<D>) {
		this.o = opts;
		this.steps = opts.def.steps;
	}

	/** Starts a new saga (or returns the stored one if `id` was used before) and runs it to its end. */
	async start(id: string, data: D, ctx: Context): Promise<SagaRecord<D>> {
		const now = Date.now();
		const fresh: SagaRecord<D> = {
			id,
			saga: this.o.type,
			status: "running",
			step: 0,
			attempted: 0,
			data,
			error: null,
			deadline: now + (this.o.def.deadline ?? SAGA_DEFAULTS.deadline),
			history: [],
			createdAt: now,
			updatedAt: now
		};
		this.markInvoking(fresh, this.steps[0]!);
		const { created, record } = await this.o.store.create(fresh as SagaRecord, this.o.owner, this.o.node, this.o.leaseMs);
		if (!created) return record as SagaRecord<D>;
		return this.run(record as SagaRecord<D>, ctx);
	}

	/** Carries on with a saga claimed from the store. */
	resume(rec: SagaRecord<D>, ctx: Context): Promise<SagaRecord<D>> {
		const current = this.steps[rec.status === "running" ? rec.step : rec.attempted - 1];
		this.event(rec, current?.name ?? "-", "resumed");
		return this.run(rec, ctx);
	}

	private event(rec: SagaRecord<D>, step: string, event: SagaEvent["event"], error?: string): void {
		rec.history.push({ step, event, at: Date.now(), ...(error ? { error } : {}) });
	}

	private markInvoking(rec: SagaRecord<D>, step: SagaStep<D>): void {
		rec.attempted = rec.step + 1;
		this.event(rec, step.name, "invoking");
	}

	private async save(rec: SagaRecord<D>): Promise<void> {
		rec.updatedAt = Date.now();
		if (!(await this.o.store.save(rec as SagaRecord, this.o.owner, this.o.leaseMs))) throw new LeaseLost(rec.id);
	}

	private stepContext(rec: SagaRecord<D>, step: SagaStep<D>, ctx: Context): StepContext<D> {
		const timeout = step.timeout ?? SAGA_DEFAULTS.timeout;
		return {
			sagaId: rec.id,
			step: step.name,
			key: `${rec.id}:${step.name}`,
			data: rec.data,
			ctx,
			call: (action, params, opts) => ctx.call(action, params, { timeout, ...opts })
		};
	}

	/** One step's invoke or compensate, with its timeout and retries. */
	private async attempt<T>(rec: SagaRecord<D>, step: SagaStep<D>, ctx: Context, fn: (s: StepContext<D>) => Promise<T>, anyError: boolean): Promise<T> {
		const retries = step.retries ?? SAGA_DEFAULTS.retries;
		const timeout = step.timeout ?? SAGA_DEFAULTS.timeout;
		for (let n = 0; ; n++) {
			try {
				return await withTimeout(fn(this.stepContext(rec, step, ctx)), timeout, rec.saga, step.name);
			} catch (err) {
				if (n >= retries || (!anyError && !retryable(err))) throw err;
				await sleep(this.o.retryDelay * 2 ** n);
			}
		}
	}

	private async run(rec: SagaRecord<D>, ctx: Context): Promise<SagaRecord<D>> {
		try {
			while (rec.status === "running") {
				const step = this.steps[rec.step];
				if (!step) {
					rec.status = "completed";
					await this.save(rec);
					break;
				}
				if (Date.now() > rec.deadline) {
					this.event(rec, step.name, "expired");
					rec.status = "compensating";
					rec.error = { step: step.name, message: "The saga ran past its deadline", type: ErrorType.SAGA_STEP_TIMEOUT };
					await this.save(rec);
					break;
				}
				// Write-ahead: once a step may be running, compensation must cover it. Usually already written together
				// with the previous step's result (one write per step).
				if (rec.attempted <= rec.step) {
					this.markInvoking(rec, step);
					await this.save(rec);
				}
				try {
					const out = await this.attempt(rec, step, ctx, s => step.invoke(s), false);
					if (out) rec.data = { ...rec.data, ...out };
					rec.step++;
					this.event(rec, step.name, "succeeded");
					const next = this.steps[rec.step];
					if (!next) rec.status = "completed";
					else if (Date.now() <= rec.deadline) this.markInvoking(rec, next);
				} catch (err) {
					const e = describe(err);
					rec.status = "compensating";
					rec.error = { step: step.name, ...e };
					this.event(rec, step.name, "failed", e.message);
				}
				await this.save(rec);
			}
			while (rec.status === "compensating") {
				const step = this.steps[rec.attempted - 1];
				if (!step) {
					rec.status = "compensated";
					await this.save(rec);
					break;
				}
				if (step.compensate) {
					const compensate = step.compensate;
					await this.attempt(rec, step, ctx, s => compensate(s), true);
				}
				rec.attempted--;
				this.event(rec, step.name, "compensated");
				await this.save(rec);
			}
		} catch (err) {
			if (err instanceof LeaseLost) {
				this.o.logger.warn(`Saga '${rec.id}' (${rec.saga}) was taken over by another orchestrator; this one stops`);
			} else {
				// A compensation that keeps failing, or the store being down: the saga stays as stored for the next sweep.
				this.o.logger.warn(`Saga '${rec.id}' (${rec.saga}) interrupted; it will be taken up again`, describe(err).message);
				await this.o.store.release(rec.id, this.o.owner).catch(() => undefined);
			}
			return ((await this.o.store.get(rec.id).catch(() => null)) ?? rec) as SagaRecord<D>;
		}
		return rec;
	}
}
