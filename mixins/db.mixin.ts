import DbService from "moleculer-db";
import type { ServiceSchema } from "moleculer";

export interface DbMixinOptions {
	/** Collection (table) name. */
	collection: string;
	/** Documents inserted when the collection is empty at start (demo and dev data). */
	seed?: Record<string, unknown>[];
}

/**
 * moleculer-db with Lattice's defaults: an in-memory adapter (so `npm start` needs no database), `id` as the
 * public id field, and cached reads. Writes clean the service's cache entries through the broker's cacher, which
 * in Lattice drops them on every node (see lib/two-level.cacher.ts).
 */
export function DbMixin(opts: DbMixinOptions): Partial<ServiceSchema> {
	const schema: Partial<ServiceSchema<Record<string, unknown>>> & { adapter?: unknown; afterConnected?: () => Promise<void> } = {
		mixins: [DbService as unknown as ServiceSchema],
		adapter: new DbService.MemoryAdapter(),
		settings: {
			idField: "id",
			maxPageSize: 100,
			// Changes are announced by the cacher's own invalidation broadcast.
			cacheCleanEventType: "broadcastLocal"
		},
		async afterConnected(this: { adapter: { count(): Promise<number>; insertMany(d: unknown[]): Promise<unknown> }; logger: { info(...a: unknown[]): void } }) {
			if (opts.seed?.length && (await this.adapter.count()) === 0) {
				await this.adapter.insertMany(opts.seed);
				this.logger.info(`Seeded ${opts.seed.length} ${opts.collection}`);
			}
		}
	};
	return schema as Partial<ServiceSchema>;
}
