import type { CallingOptions, Context } from "moleculer";
import { configError } from "../errors.ts";

/**
 * Sagas: a business transaction across services as a sequence of local steps, each with a compensation that
 * undoes it. Either every step happens, or every step that may have happened is compensated, in reverse order
 * (README, "Consistency model"). The orchestrator writes the saga's state before and after every step, so a
 * saga interrupted by a crash is resumed or compensated by the next run (lib/saga/runner.ts).
 */

export type SagaStatus = "running" | "compensating" | "completed" | "compensated";

export interface SagaError {
	step: string;
	message: string;
	type?: string;
	code?: number;
}

export interface SagaEvent {
	step: string;
	event: "invoking" | "succeeded" | "failed" | "compensated" | "resumed" | "expired";
	at: number;
	error?: string;
}

export interface SagaRecord<D = Record<string, unknown>> {
	id: string;
	/** Saga type: `<service>.<name>`. */
	saga: string;
	status: SagaStatus;
	/** Next step to run while running. */
	step: number;
	/** Steps [0, attempted) may have taken effect: the ones compensation undoes, last first. */
	attempted: number;
	data: D;
	error: SagaError | null;
	/** Past this (epoch ms) an unfinished saga is compensated rather than resumed. */
	deadline: number;
	history: SagaEvent[];
	createdAt: number;
	updatedAt: number;
}

/** What a step gets. */
export interface StepContext<D> {
	sagaId: string;
	step: string;
	/**
	 * Unique to this saga and step, the same on every retry and after every restart: pass it to the service that
	 * does the work so that running the step twice has the effect of running it once (and so that a compensation
	 * can find, or preclude, what the step did).
	 */
	key: string;
	data: Readonly<D>;
	ctx: Context;
	/** `ctx.call` with the step's timeout. */
	call<T = unknown>(action: string, params?: Record<string, unknown>, opts?: CallingOptions): Promise<T>;
}

export interface SagaStep<D> {
	name: string;
	/** Does the step; what it returns is merged into the saga's data. Must be idempotent by `key`. */
	invoke(s: StepContext<D>): Promise<Partial<D> | void>;
	/** Undoes the step. Must be idempotent by `key`, and must also work if the step never happened. */
	compensate?(s: StepContext<D>): Promise<unknown>;
	/** ms per attempt (invoke or compensate). Default 5000. */
	timeout?: number;
	/** Extra attempts for retryable errors (timeouts, 5xx) before the saga is compensated. Default 2. */
	retries?: number;
}

export interface SagaDefinition<D> {
	steps: SagaStep<D>[];
	/** ms after the start past which an interrupted saga is compensated instead of resumed. Default 5 minutes. */
	deadline?: number;
}

export const SAGA_DEFAULTS = { timeout: 5_000, retries: 2, deadline: 5 * 60_000 } as const;

/** The longest an attempt series of one step can take: the runner renews its lease before each step. */
export function stepBudget(step: SagaStep<unknown>, retryDelay: number): number {
	const retries = step.retries ?? SAGA_DEFAULTS.retries;
	const timeout = step.timeout ?? SAGA_DEFAULTS.timeout;
	return timeout * (retries + 1) + retryDelay * (2 ** (retries + 1) - 1);
}

/** Checks a definition once, at service creation. */
export function checkDefinition<D>(name: string, def: SagaDefinition<D>, leaseMs: number, retryDelay: number): void {
	if (!Array.isArray(def.steps) || def.steps.length === 0) throw configError(`Saga '${name}' needs at least one step`);
	const seen = new Set<string>();
	for (const step of def.steps) {
		if (!step.name || seen.has(step.name)) throw configError(`Saga '${name}': step names must be unique and non-empty`);
		seen.add(step.name);
		if (typeof step.invoke !== "function") throw configError(`Saga '${name}', step '${step.name}': 'invoke' must be a function`);
		if (step.compensate !== undefined && typeof step.compensate !== "function") {
			throw configError(`Saga '${name}', step '${step.name}': 'compensate' must be a function`);
		}
		// The lease must outlast a step, or another orchestrator could take the saga over while the step still runs.
		const budget = stepBudget(step as SagaStep<unknown>, retryDelay);
		if (budget >= leaseMs) {
			throw configError(`Saga '${name}', step '${step.name}': timeout × attempts (${budget} ms) must stay below the lease (${leaseMs} ms)`);
		}
	}
}
