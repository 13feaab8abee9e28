import type { Context, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { notFound } from "../lib/errors.ts";
import { latticeSettings } from "../lib/settings.ts";
import { MemoryInventoryStore, PostgresInventoryStore, type InventoryStore, type Item } from "../lib/shop/inventory.store.ts";

const sku = { type: "string", pattern: /^[a-z0-9-]{1,64}$/ } as const;
const key = { type: "string", min: 1, max: 200 } as const;
// Only the order saga reserves and releases stock; staff with this permission set it.
const FROM_ORDERS = ["orders"];
const WRITE = ["inventory:write"];

const SEED: Item[] = [
	{ sku: "espresso-beans", name: "Espresso beans 1 kg", price: 24.5, available: 40 },
	{ sku: "burr-grinder", name: "Burr grinder", price: 129, available: 12 },
	{ sku: "milk-jug", name: "Milk jug 350 ml", price: 14.9, available: 75 }
];

/** Stock of the example shop, with reservations idempotent by key (lib/shop/inventory.store.ts). */
const InventoryService: ServiceSchema<ServiceSettingSchema, Record<string, never>, { store: InventoryStore }> = {
	name: "inventory",

	created() {
		const { database } = latticeSettings(this.broker);
		this.store = database.url ? new PostgresInventoryStore({ url: database.url, schema: database.schema }) : new MemoryInventoryStore();
	},

	async started() {
		await this.store.open();
		await this.store.seed(SEED);
	},

	async stopped() {
		await this.store.close();
	},

	actions: {
		list: {
			public: true,
			handler() {
				return this.store.list();
			}
		},
		get: {
			public: true,
			params: { sku },
			async handler(ctx: Context<{ sku: string }>) {
				return (await this.store.get(ctx.params.sku)) ?? Promise.reject(notFound("Item", ctx.params.sku));
			}
		},
		put: {
			permissions: WRITE,
			params: {
				sku,
				name: { type: "string", trim: true, min: 1, max: 200 },
				price: { type: "number", positive: true, max: 1_000_000, convert: true },
				available: { type: "number", integer: true, min: 0, max: 1_000_000_000, convert: true }
			},
			handler(ctx: Context<Item>) {
				return this.store.put(ctx.params);
			}
		},
		reserve: {
			services: FROM_ORDERS,
			params: { key, sku, qty: { type: "number", integer: true, positive: true, max: 1_000_000 } },
			handler(ctx: Context<{ key: string; sku: string; qty: number }>) {
				return this.store.reserve(ctx.params.key, ctx.params.sku, ctx.params.qty);
			}
		},
		release: {
			services: FROM_ORDERS,
			params: { key },
			handler(ctx: Context<{ key: string }>) {
				return this.store.release(ctx.params.key);
			}
		}
	}
};

export default InventoryService;
