import { test } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import type { ServiceBroker } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import ApiService from "../../../services/api.service.ts";
import ProductsService from "../../../services/products.service.ts";
import { bearer, READER, signToken } from "../../support/auth.ts";
import { createBroker, REDIS_URL, uniqueNamespace } from "../../support/cluster.ts";
import { sleep, startRedisServer } from "../../support/processes.ts";

/**
 * Two gateway replicas sharing one Redis budget: the limit holds for the cluster, not per replica, and a Redis
 * outage degrades to per-replica counting instead of failing requests.
 */

const LIMIT = 5;
const WINDOW_S = 3600;

async function replicas(env: Record<string, string>): Promise<{ brokers: ServiceBroker[]; urls: string[] }> {
	const brokers = await Promise.all(
		["a", "b"].map(r => createBroker({ ...env, NODEID: `${env.NAMESPACE}-${r}`, LATTICE_RATE_LIMIT: String(LIMIT), LATTICE_RATE_LIMIT_WINDOW: String(WINDOW_S) }, [ApiService, ProductsService]))
	);
	const urls = brokers.map(b => {
		const server = (b.getLocalService("api") as unknown as { server: Server }).server;
		return `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/products`;
	});
	return { brokers, urls };
}

/** Windows are aligned to the clock: don't start a run that would straddle a boundary. */
async function awayFromWindowEdge() {
	const left = WINDOW_S * 1000 - (Date.now() % (WINDOW_S * 1000));
	if (left < 15_000) await sleep(left + 100);
}

async function statuses(urls: string[], n: number, headers: Record<string, string> = {}): Promise<number[]> {
	const out: number[] = [];
	for (let i = 0; i < n; i++) {
		const res = await fetch(urls[i % urls.length]!, { headers });
		out.push(res.status);
		if (res.status === 429) {
			assert.equal(((await res.json()) as { type: string }).type, ErrorType.RATE_LIMITED);
			assert.ok(Number(res.headers.get("retry-after")) >= 1);
		} else await res.arrayBuffer();
	}
	return out;
}

test("the budget is shared by replicas through Redis (requests alternate between two gateways)", async () => {
	await awayFromWindowEdge();
	const { brokers, urls } = await replicas({ CACHER: REDIS_URL, NAMESPACE: uniqueNamespace("rl") });
	try {
		const anon = await statuses(urls, 8);
		assert.deepEqual(anon, [200, 200, 200, 200, 200, 429, 429, 429]);
		const user = await statuses(urls, 7, bearer(await signToken(READER)));
		assert.deepEqual(user, [200, 200, 200, 200, 200, 429, 429], "a user has a budget of their own, also shared");
	} finally {
		await Promise.all(brokers.map(b => b.stop()));
	}
});

test("without Redis each replica counts alone; a Redis outage falls back to that instead of failing requests", async () => {
	await awayFromWindowEdge();
	const memory = await replicas({ CACHER: "memory", NAMESPACE: uniqueNamespace("rl") });
	try {
		assert.equal((await statuses(memory.urls, 12)).filter(s => s === 200).length, 2 * LIMIT);
	} finally {
		await Promise.all(memory.brokers.map(b => b.stop()));
	}

	const redis = await startRedisServer();
	const { brokers, urls } = await replicas({ CACHER: "memory", LATTICE_RATE_LIMIT_REDIS: redis.url, NAMESPACE: uniqueNamespace("rl") });
	try {
		assert.deepEqual(await statuses(urls, 4), [200, 200, 200, 200], "4 of 5 spent in Redis");
		await redis.stop();
		const during = await statuses(urls, 12);
		assert.ok(during.every(s => s === 200 || s === 429), `no failures while Redis is down: ${during}`);
		assert.equal(during.filter(s => s === 200).length, 2 * LIMIT, "each replica counts its own budget meanwhile");
	} finally {
		await Promise.all(brokers.map(b => b.stop()));
		await redis.stop();
	}
});
