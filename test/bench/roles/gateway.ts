import { ServiceBroker } from "moleculer";
import type { BrokerSpec } from "../protocol.ts";
import { brokerOptions } from "../systems.ts";
import { benchService } from "./bench.service.ts";
import { bareGateway, latticeGateway } from "./gateway.services.ts";
import { cpuMicros, serveIpc, specFromArgv } from "./ipc.ts";

/** One process with an HTTP gateway and the actions it calls (local calls, no transporter). */
const spec = specFromArgv<BrokerSpec>();
const handled = { count: 0 };
const broker = new ServiceBroker(brokerOptions(spec));
const services = spec.kind === "lattice" ? latticeGateway() : bareGateway(spec.port ?? 0);
for (const schema of [...services, benchService(handled)]) broker.createService(schema);
await broker.start();

serveIpc({ stats: async () => ({ handled: handled.count, cpuUs: cpuMicros() }) }, () => broker.stop());
