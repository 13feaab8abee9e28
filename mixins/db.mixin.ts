import DbService from "moleculer-db";
import { Errors, type Context, type Service, type ServiceSchema } from "moleculer";
import { ErrorType, notFound } from "../lib/errors.ts";
import { latticeSettings } from "../lib/settings.ts";
import { PostgresAdapter } from "./adapters/postgres.adapter.ts";

export interface DbMixinOptions {
	/** Collection (table) name. */
	collection: string;
	/** Documents inserted when the collection is empty at start (demo and dev data). */
	seed?: Record<string, unknown>[];
	/** Extra ordered SQL migrations for PostgreSQL (`{table}` is the qualified table name). */
	migrations?: string[];
	/** Emit `<service>.created|updated|removed` events on every change. Default true. */
	events?: boolean;
}

type Doc = Record<string, unknown>;

interface Adapter {
	count(): Promise<number>;
	insertMany(docs: Doc[]): Promise<unknown>;
	updateMany(query: Doc, update: Doc): Promise<number>;
	updateById(id: unknown, update: Doc): Promise<Doc | null>;
	findById(id: unknown): Promise<Doc | null>;
}

type DbServiceThis = Service & {
	adapter: Adapter & { init(b: unknown, s: unknown): void };
	decodeID(id: unknown): unknown;
	beforeEntityChange(type: string, entity: Doc, ctx: Context): Promise<Doc>;
	transformDocuments(ctx: Context, params: Doc, docs: Doc): Promise<Doc>;
	entityChanged(type: string, json: Doc, ctx: Context, raw: Doc): Promise<void>;
};

function versionConflict(id: unknown, expected: number, current: unknown): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(
		`Version conflict: expected version ${expected}, the entity is at ${String(current)}`,
		409,
		ErrorType.VERSION_CONFLICT,
		{ id, expected, current }
	);
}

/**
 * moleculer-db with Lattice's defaults:
 * - the in-memory adapter unless `DATABASE_URL` is set, then PostgreSQL (`adapters/postgres.adapter.ts`), with
 *   migrations run at start;
 * - `id` as the public id field and a `version` on every entity: an update that names `version` succeeds only
 *   if nobody changed the entity since (409 `LATTICE_VERSION_CONFLICT` otherwise);
 * - cached reads; writes clean the service's entries through the broker's cacher, which drops them on every node;
 * - `<service>.created|updated|removed` events after each change.
 */
export function DbMixin(opts: DbMixinOptions): Partial<ServiceSchema> {
	const emitEvents = opts.events !== false;
	const emitChange = (type: string) =>
		function (this: DbServiceThis, json: Doc, ctx: Context) {
			if (emitEvents) return ctx.emit(`${this.name}.${type}`, json);
		};

	const schema = {
		mixins: [DbService as unknown as ServiceSchema],
		settings: {
			idField: "id",
			maxPageSize: 100,
			// Changes are announced by the cacher's own invalidation broadcast.
			cacheCleanEventType: "broadcastLocal"
		},

		created(this: DbServiceThis) {
			// moleculer-db's own created() has already put an in-memory adapter in place.
			const { database } = latticeSettings(this.broker);
			if (database.url) {
				this.adapter = new PostgresAdapter({
					url: database.url,
					schema: database.schema,
					table: opts.collection,
					migrations: opts.migrations
				}) as unknown as DbServiceThis["adapter"];
				this.adapter.init(this.broker, this);
			}
		},

		async afterConnected(this: DbServiceThis) {
			if (opts.seed?.length && (await this.adapter.count()) === 0) {
				await this.adapter.insertMany(opts.seed.map(d => ({ ...d, version: 1 })));
				this.logger.info(`Seeded ${opts.seed.length} ${opts.collection}`);
			}
		},

		beforeEntityCreate(entity: Doc) {
			return { ...entity, version: 1 };
		},

		entityCreated: emitChange("created"),
		entityUpdated: emitChange("updated"),
		entityRemoved: emitChange("removed"),

		methods: {
			/** moleculer-db's update plus optimistic concurrency: `version` in params must match the stored one. */
			async _update(this: DbServiceThis, ctx: Context, params: Doc) {
				const { id: rawId, version, ...fields } = params;
				const id = this.decodeID(rawId);
				const sets = await this.beforeEntityChange("update", fields, ctx);
				const update = { $set: sets, $inc: { version: 1 } };
				let doc: Doc | null;
				if (version === undefined) {
					doc = await this.adapter.updateById(id, update);
				} else {
					const n = await this.adapter.updateMany({ _id: id, version }, update);
					doc = await this.adapter.findById(id);
					if (doc && n === 0) throw versionConflict(rawId, version as number, doc.version);
				}
				if (!doc) throw notFound("Entity", rawId);
				const json = await this.transformDocuments(ctx, {}, doc);
				await this.entityChanged("updated", json, ctx, doc);
				return json;
			}
		}
	};
	return schema as unknown as Partial<ServiceSchema>;
}
