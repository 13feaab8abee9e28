import { ServiceBroker } from "moleculer";
import type { BrokerSpec } from "../protocol.ts";
import { brokerOptions } from "../systems.ts";
import { benchService } from "./bench.service.ts";
import { cpuMicros, serveIpc, specFromArgv } from "./ipc.ts";
import { serveFloor } from "./nats-floor.ts";

/** A process serving the bench actions over the transporter (or, for the NATS floor, straight on nats.js). */
const spec = specFromArgv<BrokerSpec>();
const handled = { count: 0 };
const stats = async () => ({ handled: handled.count, cpuUs: cpuMicros() });

if (spec.kind === "nats") {
	const nc = await serveFloor(spec, {
		"bench.echo": params => {
			handled.count++;
			return params;
		}
	});
	serveIpc({ stats }, () => nc.drain());
} else {
	const broker = new ServiceBroker(brokerOptions(spec));
	broker.createService(benchService(handled));
	await broker.start();
	serveIpc({ stats }, async () => {
		// Leave nothing in the shared Redis; a failure here only costs keys that expire anyway.
		await broker.cacher?.clean().catch(() => undefined);
		await broker.stop();
	});
}
