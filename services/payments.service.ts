import type { Context, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { latticeSettings } from "../lib/settings.ts";
import { MemoryPaymentsStore, PostgresPaymentsStore, type PaymentsStore } from "../lib/shop/payments.store.ts";

const key = { type: "string", min: 1, max: 200 } as const;
// Only the order saga charges and refunds.
const FROM_ORDERS = ["orders"];

/** Payments of the example shop: charges and refunds idempotent by key (lib/shop/payments.store.ts). */
const PaymentsService: ServiceSchema<ServiceSettingSchema, Record<string, never>, { store: PaymentsStore }> = {
	name: "payments",

	created() {
		const { database } = latticeSettings(this.broker);
		this.store = database.url ? new PostgresPaymentsStore({ url: database.url, schema: database.schema }) : new MemoryPaymentsStore();
	},

	started() {
		return this.store.open();
	},

	stopped() {
		return this.store.close();
	},

	actions: {
		charge: {
			services: FROM_ORDERS,
			params: { key, orderId: { type: "string", min: 1, max: 200 }, amount: { type: "number", positive: true, max: 1_000_000_000 } },
			handler(ctx: Context<{ key: string; orderId: string; amount: number }>) {
				return this.store.charge(ctx.params.key, ctx.params.orderId, ctx.params.amount);
			}
		},
		refund: {
			services: FROM_ORDERS,
			params: { key },
			handler(ctx: Context<{ key: string }>) {
				return this.store.refund(ctx.params.key);
			}
		}
	}
};

export default PaymentsService;
