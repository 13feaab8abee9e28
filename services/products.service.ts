import { Errors, type Context, type ServiceSchema } from "moleculer";
import { ErrorType } from "../lib/errors.ts";
import { DbMixin } from "../mixins/db.mixin.ts";

const name = { type: "string", trim: true, min: 1, max: 200 } as const;
const price = { type: "number", positive: true, max: 1_000_000_000, convert: true } as const;
const stock = { type: "number", integer: true, min: 0, max: 1_000_000_000, convert: true } as const;
// Catalog reads are open to anyone; every write needs this permission, checked on whichever node serves it.
const WRITE = ["products:write"];

function hasOperator(v: unknown): boolean {
	return typeof v === "object" && v !== null && Object.entries(v).some(([k, x]) => k.startsWith("$") || hasOperator(x));
}

/**
 * moleculer-db hands `query` to the adapter untouched, and the catalog's reads are public: only plain equality
 * filters get through (the PostgreSQL adapter's own rule, now the in-memory one's too). Operators ($where,
 * $regex, $or…) reach adapter internals, and a query that is not JSON would fail inside moleculer-db as a 500.
 */
function plainQuery(ctx: Context<{ query?: unknown }>): void {
	let q = ctx.params.query;
	if (q === undefined) return;
	if (typeof q === "string") {
		try {
			q = JSON.parse(q);
		} catch {
			q = null;
		}
	}
	if (typeof q !== "object" || q === null || Array.isArray(q) || hasOperator(q)) {
		throw new Errors.MoleculerClientError("query must be a JSON object of plain field values (no operators)", 400, ErrorType.BAD_REQUEST, { field: "query" });
	}
	ctx.params.query = q;
}

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

	hooks: {
		before: { list: plainQuery, find: plainQuery, count: plainQuery }
	},

	actions: {
		list: { public: true },
		get: { public: true },
		find: { public: true },
		count: { public: true },
		insert: { permissions: WRITE },
		create: {
			permissions: WRITE,
			params: { name, price, stock: { ...stock, optional: true, default: 0 } }
		},
		update: {
			permissions: WRITE,
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
			permissions: WRITE,
			params: { id: { type: "string", min: 1, max: 64 } }
		}
	}
};

export default ProductsService;
