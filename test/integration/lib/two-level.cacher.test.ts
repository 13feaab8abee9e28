import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import type { LatticeConfig } from "../../../moleculer.config.ts";
import {
	createBroker,
	metricValue,
	NATS_URL,
	REDIS_URL,
	startNode,
	uniqueNamespace,
	type LatticeNode
} from "../../support/cluster.ts";
import { bearer, EDITOR, signToken } from "../../support/auth.ts";
import { startNatsServer, waitFor } from "../../support/processes.ts";

/**
 * The two-level cacher across nodes: L2 (Redis) shared between brokers, L1 on the caller's side of a remote call
 * (a gateway answers repeated reads from its own memory), and invalidation of every node's L1 on writes and on
 * reconnects.
 */

interface Product {
	id: string;
	name: string;
	price: number;
	stock: number;
}

/** Deletes every key a namespace left in the shared Redis. */
async function dropKeys(redis: Redis, namespace: string): Promise<void> {
	const keys = await redis.keys(`lattice-${namespace}-*`);
	if (keys.length > 0) await redis.del(...keys);
}

async function lookups(broker: ServiceBroker, outcome: string): Promise<number> {
	return metricValue(await (broker.options as LatticeConfig).metricsRegistry.metrics(), "lattice_cache_lookups_total", { outcome });
}

/** A cached action that says which node computed the value, counting its handler calls per broker. */
function kvService(calls: Map<string, number>): ServiceSchema {
	return {
		name: "kv",
		actions: {
			get: {
				public: true,
				cache: { keys: ["id"] },
				params: { id: "string" },
				handler(ctx: Context<{ id: string }>) {
					const nodeID = ctx.broker.nodeID;
					calls.set(nodeID, (calls.get(nodeID) ?? 0) + 1);
					return { id: ctx.params.id, computedBy: nodeID };
				}
			}
		}
	};
}

describe("two-level cacher across nodes", () => {
	let redis: Redis;

	before(() => {
		redis = new Redis(REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 1 });
	});

	after(async () => {
		await redis.quit();
	});

	test("L2: a broker answers from Redis what another broker computed, without calling its handler", async () => {
		const namespace = uniqueNamespace("l2");
		const calls = new Map<string, number>();
		const env = { CACHER: REDIS_URL, NAMESPACE: namespace };
		// No transporter: the brokers share nothing but Redis.
		const [a, b] = await Promise.all([
			createBroker({ ...env, NODEID: "l2-a" }, [kvService(calls)]),
			createBroker({ ...env, NODEID: "l2-b" }, [kvService(calls)])
		]);
		try {
			// L2 connects in the background: wait until each broker's writes reach Redis.
			for (const broker of [a, b]) {
				await waitFor(
					async () => {
						await broker.cacher!.set(`probe-${broker.nodeID}`, 1);
						return (await redis.exists(`lattice-${namespace}-probe-${broker.nodeID}`)) === 1;
					},
					5_000,
					`${broker.nodeID} connected to Redis`
				);
			}

			assert.deepEqual(await a.call("kv.get", { id: "x" }), { id: "x", computedBy: "l2-a" });
			// A writes L2 after answering; B must not race it.
			await waitFor(async () => (await redis.keys(`lattice-${namespace}-kv.get:*`)).length === 1, 5_000, "A's entry in Redis");

			assert.deepEqual(await b.call("kv.get", { id: "x" }), { id: "x", computedBy: "l2-a" });
			assert.equal(calls.get("l2-b"), undefined, "B's handler ran for a key A had filled");
			assert.equal(await lookups(b, "l2"), 1);
			// And now from B's own L1.
			assert.deepEqual(await b.call("kv.get", { id: "x" }), { id: "x", computedBy: "l2-a" });
			assert.equal(await lookups(b, "l1"), 1);

			// A key nobody filled is computed by B itself.
			assert.deepEqual(await b.call("kv.get", { id: "y" }), { id: "y", computedBy: "l2-b" });
			assert.equal(calls.get("l2-b"), 1);
			assert.equal(calls.get("l2-a"), 1);
		} finally {
			await Promise.all([a.stop(), b.stop()]);
			await dropKeys(redis, namespace);
		}
	});

	describe("gateway and products as separate nodes", () => {
		const namespace = uniqueNamespace("cache");
		let gateway: LatticeNode;
		let products: LatticeNode;

		before(async () => {
			const env = { TRANSPORTER: NATS_URL, CACHER: REDIS_URL, NAMESPACE: namespace };
			const suffix = namespace.slice(-6);
			[gateway, products] = await Promise.all([
				startNode({ nodeID: `gw-${suffix}`, services: "api", gateway: true, env }),
				startNode({ nodeID: `products-${suffix}`, services: "products", env })
			]);
		});

		after(async () => {
			await Promise.allSettled([gateway?.stop(), products?.stop()]);
			await dropKeys(redis, namespace);
		});

		const productGets = async () =>
			metricValue(await products.metrics(), "moleculer_request_total", { action: "products.get" });
		const gatewayL1Hits = async () =>
			metricValue(await gateway.metrics(), "lattice_cache_lookups_total", { outcome: "l1" });

		async function getProduct(id: string): Promise<Product> {
			const res = await fetch(`${gateway.gatewayUrl}/api/products/${id}`);
			assert.equal(res.status, 200);
			return (await res.json()) as Product;
		}

		test("a repeated GET is answered from the gateway's L1; a PUT invalidates it on the gateway", async () => {
			const list = await waitFor(
				async () => {
					const res = await fetch(`${gateway.gatewayUrl}/api/products`);
					return res.status === 200 && ((await res.json()) as { rows: Product[] });
				},
				10_000,
				"gateway to reach the products service"
			);
			const product = list.rows[0]!;

			const gets0 = await productGets();
			const hits0 = await gatewayL1Hits();
			assert.deepEqual(await getProduct(product.id), product);
			assert.equal(await productGets(), gets0 + 1, "first GET reaches the products node");

			assert.deepEqual(await getProduct(product.id), product);
			assert.equal(await productGets(), gets0 + 1, "second GET must not reach the products node");
			assert.equal(await gatewayL1Hits(), hits0 + 1, "second GET answered from the gateway's L1");

			const price = product.price + 10;
			const res = await fetch(`${gateway.gatewayUrl}/api/products/${product.id}`, {
				method: "PUT",
				headers: { "content-type": "application/json", ...bearer(await signToken(EDITOR)) },
				body: JSON.stringify({ price })
			});
			assert.equal(res.status, 200);
			assert.equal(((await res.json()) as Product).price, price);

			// The very next read, with no wait: the clean broadcast left the products node before its reply.
			const fresh = await getProduct(product.id);
			assert.deepEqual([fresh.id, fresh.name, fresh.price], [product.id, product.name, price]);
			assert.equal(await productGets(), gets0 + 2, "the GET after the write reaches the products node again");
			assert.deepEqual(await getProduct(product.id), fresh);
			assert.equal(await gatewayL1Hits(), hits0 + 2);
		});

		test("/ready and /metrics answer on the gateway and the products node", async () => {
			for (const node of [gateway, products]) {
				assert.equal((await fetch(`${node.opsUrl}/ready`)).status, 200, node.nodeID);
				const text = await node.metrics();
				assert.ok(metricValue(text, "nodejs_heap_size_total_bytes") > 0, `${node.nodeID}: default metrics`);
				assert.match(text, /^# TYPE moleculer_request_total counter$/m, node.nodeID);
			}
			assert.ok(metricValue(await products.metrics(), "moleculer_request_total", { action: "products.list" }) > 0);
		});
	});

	test("a caller drops its L1 when its NATS connection comes back (invalidations may have been missed)", async () => {
		const nats = await startNatsServer();
		const namespace = uniqueNamespace("reconnect");
		const env = { TRANSPORTER: nats.url, CACHER: "memory", NAMESPACE: namespace, LOGLEVEL: "error" };
		const calls = new Map<string, number>();
		const server = await createBroker({ ...env, NODEID: "rc-server" }, [kvService(calls)]);
		const caller = await createBroker({ ...env, NODEID: "rc-caller" });
		try {
			await waitFor(() => caller.call("kv.get", { id: "k" }), 5_000, "caller to reach the server");
			await caller.call("kv.get", { id: "k" });
			assert.equal(calls.get("rc-server"), 1, "second call answered from the caller's L1");
			const reconnected = Promise.all(
				[server, caller].map(b => new Promise(resolve => b.localBus.once("$transporter.connected", resolve)))
			);

			await nats.stop(true);
			await nats.start();
			await reconnected;

			// A request published while the server was still away is lost with no error: retry with a short timeout.
			await waitFor(() => caller.call("kv.get", { id: "k" }, { timeout: 2_000 }), 10_000, "caller to reach the server again");
			// The caller asked the server again instead of answering from its L1.
			assert.equal(await lookups(caller, "l1"), 1);
			assert.equal(metricValue(await (server.options as LatticeConfig).metricsRegistry.metrics(), "moleculer_request_total", { action: "kv.get" }), 2);
		} finally {
			if (!nats.process.alive()) await nats.start();
			await Promise.all([server.stop(), caller.stop()]);
			await nats.destroy();
		}
	});
});
