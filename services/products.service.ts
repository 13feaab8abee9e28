import type { ServiceSchema } from "moleculer";
import { DbMixin } from "../mixins/db.mixin.ts";

const name = { type: "string", trim: true, min: 1, max: 200 } as const;
const price = { type: "number", positive: true, max: 1_000_000_000, convert: true } as const;
const stock = { type: "number", integer: true, min: 0, max: 1_000_000_000, convert: true } as const;

/** The example catalog: REST CRUD over moleculer-db, reads cached and invalidated cluster-wide on writes. */
const ProductsService: ServiceSchema<Record<string, unknown>> = {
	name: "products",
	mixins: [
		DbMixin({
			collection: "products",
			seed: [
				{ name: "Espresso beans 1 kg", price: 24.5, stock: 40 },
				{ name: "Burr grinder", price: 129, stock: 12 },
				{ name: "Milk jug 350 ml", price: 14.9, stock: 75 }
			]
		})
	],

	settings: {
		fields: ["id", "name", "price", "stock", "version"]
	},

	actions: {
		create: {
			params: { name, price, stock: { ...stock, optional: true, default: 0 } }
		},
		update: {
			params: {
				id: { type: "string", min: 1, max: 64 },
				name: { ...name, optional: true },
				price: { ...price, optional: true },
				stock: { ...stock, optional: true },
				// Send the version you read to make the update conditional (409 if someone changed it since).
				version: { type: "number", integer: true, min: 1, optional: true, convert: true }
			}
		},
		remove: {
			params: { id: { type: "string", min: 1, max: 64 } }
		}
	}
};

export default ProductsService;
