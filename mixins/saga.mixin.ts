import { randomUUID } from "node:crypto";
import type { Context, Service, ServiceSchema } from "moleculer";
import { configError } from "../lib/errors.ts";
import { PostgresSagaStore } from "../lib/saga/postgres.store.ts";
import { SagaRunner } from "../lib/saga/runner.ts";
import { checkDefinition, type SagaDefinition, type SagaRecord } from "../lib/saga/saga.ts";
import { MemorySagaStore, type SagaStore } from "../lib/saga/store.ts";
import { serviceContext } from "../lib/service-context.ts";
import { latticeSettings } from "../lib/settings.ts";

export interface SagaMixinOptions {
	// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each saga has its own data type
	sagas: Record<string, SagaDefinition<any>>;
	/** Services the steps call: recovery waits until they are there rather than failing steps for want of them. */
	dependsOn?: string[];
	/** How long an orchestrator holds a saga between two writes, ms. Default 30000. */
	leaseMs?: number;
	/** How often unfinished sagas nobody holds are looked for, ms. Default 10000. */
	sweepInterval?: number;
	/** First delay between retries of a step, ms (doubles). Default 100. */
	retryDelay?: number;
}

export interface SagaService extends Service {
	/**
	 * Starts saga `name` with `id` (use a stable one, e.g. the order id: starting the same id again returns that
	 * saga instead of running a second) and resolves with its final state: completed, or compensated with the
	 * error that caused it. Steps run as nested calls of `ctx`.
	 */
	startSaga<D extends object>(name: string, id: string, data: D, ctx: Context): Promise<SagaRecord<D>>;
	getSaga<D extends object>(id: string): Promise<SagaRecord<D> | null>;
	/** Takes up unfinished sagas nobody holds and runs them to their end; resolves with how many it took. */
	recoverSagas(): Promise<number>;
}

interface SagaInternals extends SagaService {
	sagaStore: SagaStore;
	sagaRunners: Map<string, SagaRunner<object>>;
	sagaOwner: string;
	sagaRuns: Set<Promise<unknown>>;
	sagaTimer: NodeJS.Timeout | null;
	sagaSweeping: Promise<number> | null;
	sagaStopping: boolean;
}

const DEFAULTS = { leaseMs: 30_000, sweepInterval: 10_000, retryDelay: 100 } as const;

/**
 * Makes a service a saga orchestrator (lib/saga): it declares sagas (steps with compensations), starts them
 * with `this.startSaga`, and on start — then every `sweepInterval` — resumes or compensates the unfinished ones
 * that nobody holds any more (a crashed orchestrator's, this node's previous run's). State is in PostgreSQL
 * when DATABASE_URL is set (`lattice_sagas`), else in memory, where a crash forgets the sagas in flight.
 */
export function SagaMixin(opts: SagaMixinOptions): Partial<ServiceSchema> {
	const leaseMs = opts.leaseMs ?? DEFAULTS.leaseMs;
	const sweepInterval = opts.sweepInterval ?? DEFAULTS.sweepInterval;
	const retryDelay = opts.retryDelay ?? DEFAULTS.retryDelay;
	for (const [name, def] of Object.entries(opts.sagas)) checkDefinition(name, def, leaseMs, retryDelay);

	const track = (svc: SagaInternals, p: Promise<unknown>) => {
		svc.sagaRuns.add(p);
		const done = () => void svc.sagaRuns.delete(p);
		p.then(done, done);
	};

	const schema = {
		created(this: SagaInternals) {
			const { database } = latticeSettings(this.broker);
			this.sagaStore = database.url ? new PostgresSagaStore({ url: database.url, schema: database.schema }) : new MemorySagaStore();
			this.sagaOwner = `${this.broker.nodeID}/${randomUUID().slice(0, 8)}`;
			this.sagaRuns = new Set();
			this.sagaTimer = null;
			this.sagaSweeping = null;
			this.sagaStopping = false;
			this.sagaRunners = new Map(
				Object.entries(opts.sagas).map(([name, def]) => [
					name,
					new SagaRunner<object>({
						type: `${this.fullName}.${name}`,
						def,
						store: this.sagaStore,
						owner: this.sagaOwner,
						node: this.broker.nodeID,
						leaseMs,
						retryDelay,
						logger: this.logger
					})
				])
			);
		},

		async started(this: SagaInternals) {
			await this.sagaStore.open();
			if (!this.sagaStore.durable) this.logger.info("Saga state is in memory: sagas in flight are forgotten if the process dies (set DATABASE_URL)");
			// Recovery must not hold up the start (its dependencies may be starting too); it runs in the background.
			track(
				this,
				(async () => {
					while (opts.dependsOn?.length && !this.sagaStopping) {
						try {
							await this.waitForServices(opts.dependsOn, 1000, 100);
							break;
						} catch {
							// Not there yet: look again unless the service is stopping.
						}
					}
					if (this.sagaStopping) return;
					const n = await this.recoverSagas();
					if (n > 0) this.logger.info(`Took up ${n} unfinished saga(s)`);
					// A stop that came during the recovery has already cleared the (then missing) timer: starting the sweep
					// now would leave it running after the service, and keep the process alive.
					if (this.sagaStopping) return;
					this.sagaTimer = setInterval(() => void this.recoverSagas().catch(err => this.logger.warn("Saga sweep failed", err)), sweepInterval);
				})().catch(err => this.logger.warn("Saga recovery failed", err))
			);
		},

		async stopped(this: SagaInternals) {
			this.sagaStopping = true;
			if (this.sagaTimer) clearInterval(this.sagaTimer);
			// Sagas in flight run to their end (or to their next write after the store goes): none is left half done.
			while (this.sagaRuns.size > 0) await Promise.allSettled([...this.sagaRuns]);
			await this.sagaStore.close();
		},

		methods: {
			async startSaga<D extends object>(this: SagaInternals, name: string, id: string, data: D, ctx: Context): Promise<SagaRecord<D>> {
				const runner = this.sagaRunners.get(name);
				if (!runner) throw configError(`Service '${this.fullName}' has no saga '${name}'`);
				const run = runner.start(id, data, ctx);
				track(this, run);
				return run as Promise<SagaRecord<D>>;
			},

			getSaga<D extends object>(this: SagaInternals, id: string): Promise<SagaRecord<D> | null> {
				return this.sagaStore.get(id) as Promise<SagaRecord<D> | null>;
			},

			recoverSagas(this: SagaInternals): Promise<number> {
				this.sagaSweeping ??= (async () => {
					const types = [...this.sagaRunners.keys()].map(n => `${this.fullName}.${n}`);
					let taken = 0;
					while (!this.sagaStopping) {
						const batch = await this.sagaStore.claim(types, this.sagaOwner, this.broker.nodeID, 50, leaseMs);
						if (batch.length === 0) break;
						taken += batch.length;
						for (const rec of batch) {
							const runner = this.sagaRunners.get(rec.saga.slice(this.fullName.length + 1))!;
							track(this, runner.resume(rec, serviceContext(this, {})));
						}
					}
					return taken;
				})().finally(() => (this.sagaSweeping = null));
				return this.sagaSweeping;
			}
		}
	};
	return schema as unknown as Partial<ServiceSchema>;
}
