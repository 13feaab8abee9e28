import type { Service, ServiceSchema } from "moleculer";
import { FactCollector, natsConnectionOf, type Fact } from "../lib/facts.ts";
import { latticeSettings } from "../lib/settings.ts";

export interface FactConsumerOptions {
	/** The topic the edge services publish on (`publishFacts(topic, …)`). */
	topic: string;
	/** Name of the service method that handles one fact: `(fact, site) => void | Promise<void>`. */
	handler: string;
	/** Durable consumer name; default the service's name. One per consuming service. */
	durable?: string;
}

export interface FactConsumerService extends Service {
	factCollector: FactCollector;
}

/**
 * The consuming end of store-and-forward, for a cloud service: on start it makes sure the hub stream sources the
 * outboxes of the sites in LATTICE_FACT_SITES and hands each fact of `topic` to the handler method once, in order
 * per source (lib/facts.ts). Run one replica of the consuming service: two would share the durable consumer and
 * split a source's facts between them.
 */
export function FactConsumerMixin(opts: FactConsumerOptions): Partial<ServiceSchema> {
	const schema = {
		async started(this: FactConsumerService) {
			const { facts } = latticeSettings(this.broker);
			const handler = (this as unknown as Record<string, unknown>)[opts.handler];
			if (typeof handler !== "function") throw new TypeError(`FactConsumerMixin: no method '${opts.handler}' on '${this.name}'`);
			this.factCollector = new FactCollector({
				namespace: this.broker.namespace,
				hubDomain: facts.hubDomain,
				sites: facts.sites,
				topic: opts.topic,
				durable: opts.durable ?? this.name.replace(/[^A-Za-z0-9_-]/g, "_"),
				handle: (fact: Fact, site: string) => handler.call(this, fact, site),
				logger: this.logger
			});
			await this.factCollector.start(natsConnectionOf(this.broker));
		},

		async stopped(this: FactConsumerService) {
			await this.factCollector?.stop();
		}
	};
	// Moleculer types `this` in lifecycle handlers as a bare Service; these handlers need the mixin's fields.
	return schema as unknown as Partial<ServiceSchema>;
}
