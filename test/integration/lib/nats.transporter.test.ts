import { after, test } from "node:test";
import assert from "node:assert/strict";
import type { ServiceBroker } from "moleculer";
import { createBroker, NATS_URL, uniqueNamespace } from "../../support/cluster.ts";

/**
 * Lattice's NATS transporter ends the discovery wait once the other nodes' INFO has stopped arriving, instead of
 * Moleculer's fixed 500 ms (the cold-start bench shows the time saved). What must not change: a node's services
 * start only once it knows the nodes already running.
 */

const brokers: ServiceBroker[] = [];
after(async () => {
	await Promise.all(brokers.map(b => b.stop()));
});

test("a node joining a running cluster knows every running node when its services start", async () => {
	const namespace = uniqueNamespace("discovery");
	const env = { TRANSPORTER: NATS_URL, NAMESPACE: namespace };
	const running = await Promise.all(
		[0, 1, 2, 3].map(async i => {
			const b = await createBroker({ ...env, NODEID: `${namespace}-running-${i}` }, [{ name: `svc${i}`, actions: { hello: { public: true, handler: () => i } } }]);
			brokers.push(b);
			return b;
		})
	);
	const seen: string[][] = [];
	const joining = await createBroker({ ...env, NODEID: `${namespace}-joining` }, [
		{
			name: "observer",
			started(this: { broker: ServiceBroker }) {
				seen.push(this.broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true }).map(s => s.name));
			}
		}
	]);
	brokers.push(joining);
	assert.equal(seen.length, 1);
	assert.deepEqual(
		seen[0]!.filter(n => n.startsWith("svc")).sort(),
		running.map((_, i) => `svc${i}`),
		"services of the running nodes, as the joining node's registry had them when its own services started"
	);
	// And it is usable at once: a call to each of them succeeds.
	for (let i = 0; i < running.length; i++) assert.equal(await joining.call(`svc${i}.hello`), i);
});
