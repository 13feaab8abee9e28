import { test } from "node:test";
import assert from "node:assert/strict";
import type { TrafficRule } from "../../middlewares/traffic-split.middleware.ts";
import { httpCall, metricValue, startNatsServer, startNode, stopAll, uniqueNamespace, waitFor, type LatticeNode } from "../support/index.ts";
import { CHAOS_GATEWAY, CHAOS_SERVICE, nodeAvailable, quietClient } from "./helpers.ts";

const RULES: TrafficRule[] = [{ service: "chaos", weights: { "1": 90, "2": 10 }, sticky: "meta.customer" }];
const V2_SHARE = 0.1;

/** Share of v2 among `n` answers, and its distance from the configured share in standard errors. */
function share(v2: number, n: number): { share: number; sigmas: number } {
	const s = v2 / n;
	return { share: s, sigmas: Math.abs(s - V2_SHARE) / Math.sqrt((V2_SHARE * (1 - V2_SHARE)) / n) };
}

/**
 * Versions side by side: two replicas labelled version 1 and one labelled version 2 of the same `chaos` service,
 * a 90/10 split, stickiness by customer, and pinning through the gateway's `x-lattice-version` header.
 * Tolerances are stated as absolute shares; each is at least 3.5 standard errors of the sample, so an honest
 * 90/10 split fails them less than once in 2,000 runs.
 */
test("traffic split between versions: 90/10 by weight, sticky by key, pinned by header at the gateway", async t => {
	const nats = await startNatsServer();
	const env = { TRANSPORTER: nats.url, NAMESPACE: uniqueNamespace("traffic"), CACHER: "none", LATTICE_TRAFFIC: JSON.stringify(RULES) };
	const version = (v: string, n: number) =>
		startNode({ nodeID: `v${v}-${n}`, services: CHAOS_SERVICE, env: { ...env, LATTICE_VERSION: v } });
	const nodes: LatticeNode[] = await Promise.all([
		version("1", 1),
		version("1", 2),
		version("2", 1),
		startNode({ nodeID: "gateway", services: CHAOS_GATEWAY, gateway: true, env: { ...env, LATTICE_RATE_LIMIT: "0" } })
	]);
	const gateway = nodes[3]!;
	const client = await quietClient(env);
	t.after(async () => {
		await client.stop();
		await stopAll(nodes);
		await nats.destroy();
	});
	await waitFor(() => ["v1-1", "v1-2", "v2-1"].every(id => nodeAvailable(client, id)), 15_000, "all replicas");
	const versionOf = (node: string) => node.slice(1, 2);

	await t.test("4,000 calls split 90/10 within ±2 points, spread over both v1 replicas", async () => {
		const byNode = new Map<string, number>();
		for (let i = 0; i < 4000; i += 50) {
			const batch = await Promise.all(Array.from({ length: 50 }, () => client.call<{ node: string }>("chaos.work")));
			for (const { node } of batch) byNode.set(node, (byNode.get(node) ?? 0) + 1);
		}
		const v2 = byNode.get("v2-1") ?? 0;
		const s = share(v2, 4000);
		t.diagnostic(JSON.stringify({ scenario: "weighted 90/10, 4000 calls", byNode: Object.fromEntries(byNode), v2Share: s.share, sigmas: s.sigmas }));
		assert.ok(Math.abs(s.share - V2_SHARE) <= 0.02, `v2 share ${s.share}`);
		assert.ok((byNode.get("v1-1") ?? 0) > 1000 && (byNode.get("v1-2") ?? 0) > 1000, "v1's replicas share its traffic");
	});

	await t.test("sticky by customer: 1,000 customers × 2 calls each stay on one version; 10% ± 3.5 points of them on v2", async () => {
		const seen = new Map<string, Set<string>>();
		for (let i = 0; i < 1000; i += 50) {
			const batch = Array.from({ length: 50 }, (_, j) => `customer-${i + j}`).flatMap(customer =>
				[0, 1].map(() =>
					client.call<{ node: string }, object>("chaos.work", {}, { meta: { customer } }).then(({ node }) => {
						const set = seen.get(customer) ?? new Set<string>();
						set.add(versionOf(node));
						seen.set(customer, set);
					})
				)
			);
			await Promise.all(batch);
		}
		const split = [...seen.values()].filter(s => s.size > 1).length;
		const onV2 = [...seen.values()].filter(s => s.has("2")).length;
		const s = share(onV2, 1000);
		t.diagnostic(JSON.stringify({ scenario: "sticky by customer, 2000 calls", customersOnV2: onV2, switched: split, sigmas: s.sigmas }));
		assert.equal(split, 0, "no customer saw two versions");
		assert.ok(Math.abs(s.share - V2_SHARE) <= 0.035, `customers on v2: ${s.share}`);
	});

	await t.test("at the gateway: x-lattice-version pins every request; without it 2,000 requests split 90/10 within ±2.5 points", async () => {
		const url = `${gateway.gatewayUrl}/chaos/work`;
		const pinned = async (v: string) => {
			const get = httpCall(url, { headers: { "x-lattice-version": v } });
			const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => get(i) as Promise<{ node: string }>));
			return new Set(answers.map(a => versionOf(a.node)));
		};
		assert.deepEqual([...(await pinned("2"))], ["2"]);
		assert.deepEqual([...(await pinned("1"))], ["1"]);

		const get = httpCall(url);
		let v2 = 0;
		for (let i = 0; i < 2000; i += 50) {
			const batch = (await Promise.all(Array.from({ length: 50 }, (_, j) => get(i + j)))) as { node: string }[];
			v2 += batch.filter(a => versionOf(a.node) === "2").length;
		}
		const s = share(v2, 2000);
		const text = await gateway.metrics();
		t.diagnostic(JSON.stringify({ scenario: "gateway, 2000 requests without header", v2Share: s.share, sigmas: s.sigmas }));
		assert.ok(Math.abs(s.share - V2_SHARE) <= 0.025, `v2 share at the gateway ${s.share}`);
		assert.equal(metricValue(text, "lattice_traffic_routed_total", { service: "chaos", version: "2", reason: "pinned" }), 100);
		assert.equal(metricValue(text, "lattice_traffic_routed_total", { service: "chaos", reason: "weighted" }), 2000);
	});
});
