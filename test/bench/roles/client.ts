import { ServiceBroker } from "moleculer";
import { BENCH_SERVICE, type BrokerSpec } from "../protocol.ts";
import { brokerOptions } from "../systems.ts";
import { closedLoop, type Call } from "./closed-loop.ts";
import { serveIpc, specFromArgv } from "./ipc.ts";
import { floorClient } from "./nats-floor.ts";
import { openLoop } from "./open-loop.ts";

/** A process that calls the bench actions on other nodes, as the orchestrator asks. */
const spec = specFromArgv<BrokerSpec>();

if (spec.kind === "nats") {
	const floor = await floorClient(spec);
	serveIpc(
		{
			closed: arg => closedLoop(floor.caller(arg.action), arg),
			open: arg => openLoop(floor.caller(arg.action), arg),
			// One subject per action, balanced by NATS: a server that answers is all there is to discover.
			endpoints: async ({ action, count }) => {
				await floor.ready(action, 20_000);
				return count;
			}
		},
		() => floor.close()
	);
} else {
	const broker = new ServiceBroker(brokerOptions(spec));
	await broker.start();
	await broker.waitForServices(BENCH_SERVICE, 20_000);
	const caller = (action: string): Call => params => broker.call(action, params as Record<string, unknown>);
	serveIpc(
		{
			closed: arg => closedLoop(caller(arg.action), arg),
			open: arg => openLoop(caller(arg.action), arg),
			endpoints: async ({ action, count }) => {
				const deadline = Date.now() + 20_000;
				for (;;) {
					const n = broker.registry.getActionEndpoints(action)?.count() ?? 0;
					if (n >= count) return n;
					if (Date.now() > deadline) throw new Error(`${action}: ${n} of ${count} endpoints after 20 s`);
					await new Promise(r => setTimeout(r, 50));
				}
			}
		},
		() => broker.stop()
	);
}
