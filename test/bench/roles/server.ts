import { ServiceBroker } from "moleculer";
import type { BrokerSpec } from "../protocol.ts";
import { brokerOptions } from "../systems.ts";
import { benchService } from "./bench.service.ts";
import { cpuMicros, serveIpc, specFromArgv } from "./ipc.ts";

/** A process serving the bench actions over the transporter. */
const spec = specFromArgv<BrokerSpec>();
const handled = { count: 0 };
const broker = new ServiceBroker(brokerOptions(spec));
broker.createService(benchService(handled));
await broker.start();

serveIpc(
	{
		stats: async () => ({ handled: handled.count, cpuUs: cpuMicros() })
	},
	async () => {
		// Leave nothing in the shared Redis; a failure here only costs keys that expire anyway.
		await broker.cacher?.clean().catch(() => undefined);
		await broker.stop();
	}
);
