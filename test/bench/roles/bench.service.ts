import type { Context, ServiceSchema } from "moleculer";
import { BENCH_SERVICE } from "../protocol.ts";

interface Handled {
	count: number;
}

function record(id: unknown) {
	return { id, name: `Product ${String(id)}`, price: 24.5, stock: 40, tags: ["coffee", "beans"] };
}

/**
 * The actions every remote and gateway cell calls. All are deliberately trivial, so what is measured is the
 * framework around them; `handled` counts handler runs (a cache hit never gets here). They are `public` (Lattice's
 * access declaration; stock Moleculer ignores it) because the bench calls them as an anonymous client.
 */
export function benchService(handled: Handled): ServiceSchema {
	return {
		name: BENCH_SERVICE,
		actions: {
			echo: {
				public: true,
				handler(ctx: Context) {
					handled.count++;
					return ctx.params;
				}
			},
			hello: {
				public: true,
				handler() {
					handled.count++;
					return { a: 1, b: "hello" };
				}
			},
			read: {
				public: true,
				handler(ctx: Context<{ id: unknown }>) {
					handled.count++;
					return record(ctx.params.id);
				}
			},
			readCached: {
				public: true,
				cache: { keys: ["id"] },
				handler(ctx: Context<{ id: unknown }>) {
					handled.count++;
					return record(ctx.params.id);
				}
			}
		}
	};
}
