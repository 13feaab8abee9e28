import { createHash, randomUUID } from "node:crypto";
import type { Context, ServiceSchema, ServiceSettingSchema } from "moleculer";
import type { Principal } from "../lib/access.ts";
import { sendToChannel } from "../lib/channels/channel.ts";
import type { SagaDefinition, SagaError } from "../lib/saga/saga.ts";
import type { Reservation } from "../lib/shop/inventory.store.ts";
import { DbMixin } from "../mixins/db.mixin.ts";
import { SagaMixin, type SagaService } from "../mixins/saga.mixin.ts";

type Doc = Record<string, unknown>;

interface OrderData {
	orderId: string;
	sku: string;
	qty: number;
	amount?: number;
}

/** What the DbMixin, the SagaMixin and the methods below add to the service. */
type OrdersVars = Pick<SagaService, "startSaga" | "getSaga"> & {
	adapter: {
		insert(doc: Doc): Promise<Doc>;
		findById(id: unknown): Promise<Doc | null>;
		updateMany(query: Doc, update: Doc): Promise<number>;
	};
	transformDocuments(ctx: Context, params: Doc, docs: Doc): Promise<Doc>;
	entityChanged(type: string, json: Doc, ctx: Context, raw: Doc): Promise<void>;
	order(ctx: Context, id: string): Promise<Doc | null>;
	setStatus(ctx: Context, id: string, set: Doc, onlyIf?: Doc): Promise<Doc | null>;
};

const sku = { type: "string", pattern: /^[a-z0-9-]{1,64}$/ } as const;
const id = { type: "string", min: 1, max: 64 } as const;
// The saga's own steps: callable by this service only, never from the gateway.
const OWN = { visibility: "protected" as const, services: ["orders"] };

/**
 * Placing an order: record it, reserve the stock, charge the payment, confirm. A failure anywhere undoes what
 * was done (release, refund, order cancelled); every call carries the saga's per-step key, so a step retried or
 * resumed after a crash takes effect once.
 */
const placeOrder: SagaDefinition<OrderData> = {
	// An order interrupted for longer than this is cancelled rather than charged late.
	deadline: 60_000,
	steps: [
		{
			name: "create",
			invoke: s => s.call("orders.record", { id: s.data.orderId, sku: s.data.sku, qty: s.data.qty }),
			compensate: s => s.call("orders.cancel", { id: s.data.orderId })
		},
		{
			name: "reserve",
			invoke: async s => {
				const r = await s.call<Reservation>("inventory.reserve", { key: s.key, sku: s.data.sku, qty: s.data.qty });
				return { amount: Math.round(r.unitPrice * r.qty * 100) / 100 };
			},
			compensate: s => s.call("inventory.release", { key: s.key })
		},
		{
			name: "charge",
			invoke: s => s.call("payments.charge", { key: s.key, orderId: s.data.orderId, amount: s.data.amount }),
			compensate: s => s.call("payments.refund", { key: s.key })
		},
		{
			name: "confirm",
			invoke: s => s.call("orders.confirm", { id: s.data.orderId, amount: s.data.amount })
		}
	]
};

/** The same caller sending the same Idempotency-Key gets the same order, never a second one. */
function orderId(user: Principal | null | undefined, idempotencyKey: string | undefined): string {
	if (!idempotencyKey) return randomUUID();
	return createHash("sha256").update(`${user?.id ?? "-"}\0${idempotencyKey}`).digest("hex").slice(0, 32);
}

/** Orders of the example shop, placed by a saga (mixins/saga.mixin.ts) and stored with the DbMixin. */
const OrdersService: ServiceSchema<ServiceSettingSchema & { fields: string[] }, Record<string, never>, OrdersVars> = {
	name: "orders",
	mixins: [DbMixin({ collection: "orders" }), SagaMixin({ sagas: { placeOrder }, dependsOn: ["inventory", "payments"] })],

	settings: {
		fields: ["id", "sku", "qty", "amount", "status", "reason", "version"]
	},

	actions: {
		// Orders change only through the saga.
		insert: false,
		update: false,
		remove: false,
		find: false,
		count: false,
		list: { permissions: ["orders:read"] },
		get: { permissions: ["orders:read"] },

		/** Places an order and answers once it is confirmed or cancelled (with the reason). */
		create: {
			permissions: ["orders:write"],
			params: {
				sku,
				qty: { type: "number", integer: true, positive: true, max: 1000, convert: true },
				idempotencyKey: { type: "string", min: 1, max: 200, optional: true }
			},
			async handler(ctx: Context<{ sku: string; qty: number; idempotencyKey?: string }, { user?: Principal | null }>) {
				const oid = orderId(ctx.meta.user, ctx.params.idempotencyKey);
				const saga = await this.startSaga("placeOrder", oid, { orderId: oid, sku: ctx.params.sku, qty: ctx.params.qty }, ctx);
				return (await this.order(ctx, oid)) ?? { id: oid, status: saga.status === "running" ? "pending" : "cancelled", reason: saga.error };
			}
		},

		record: {
			...OWN,
			params: { id, sku, qty: "number" },
			async handler(ctx: Context<{ id: string; sku: string; qty: number }>) {
				const existing = await this.adapter.findById(ctx.params.id);
				if (existing) return this.transformDocuments(ctx, {}, existing);
				const doc = await this.adapter.insert({ _id: ctx.params.id, sku: ctx.params.sku, qty: ctx.params.qty, status: "pending", version: 1 });
				const json = await this.transformDocuments(ctx, {}, doc);
				await this.entityChanged("created", json, ctx, doc);
				return json;
			}
		},

		/**
		 * Confirms the order and announces it on channel `orders.confirmed` for whoever must act on it (shipping,
		 * mail). The message id is fixed per order, so a retried or resumed confirm announces it once.
		 */
		confirm: {
			...OWN,
			params: { id, amount: "number" },
			async handler(ctx: Context<{ id: string; amount: number }>) {
				const order = await this.setStatus(ctx, ctx.params.id, { status: "confirmed", amount: ctx.params.amount }, { status: "pending" });
				await sendToChannel(this.broker, "orders.confirmed", order, { id: `${ctx.params.id}:confirmed` });
				return order;
			}
		},

		cancel: {
			...OWN,
			params: { id },
			async handler(ctx: Context<{ id: string }>) {
				const saga = await this.getSaga(ctx.params.id);
				const error: SagaError | null = saga?.error ?? null;
				return this.setStatus(ctx, ctx.params.id, { status: "cancelled", reason: error ? { step: error.step, type: error.type, message: error.message } : null });
			}
		}
	},

	methods: {
		async order(ctx: Context, oid: string) {
			const doc = await this.adapter.findById(oid);
			return doc ? this.transformDocuments(ctx, {}, doc) : null;
		},

		/** Sets fields on an order (if it matches `onlyIf`), announcing the change; idempotent. */
		async setStatus(ctx: Context, oid: string, set: Doc, onlyIf: Doc = {}) {
			const n = await this.adapter.updateMany({ _id: oid, ...onlyIf }, { $set: set, $inc: { version: 1 } });
			const doc = await this.adapter.findById(oid);
			if (!doc) return null;
			const json = await this.transformDocuments(ctx, {}, doc);
			if (n > 0) await this.entityChanged("updated", json, ctx, doc);
			return json;
		}
	}
};

export default OrdersService;
