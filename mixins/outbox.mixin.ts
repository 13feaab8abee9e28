import type { Service, ServiceSchema } from "moleculer";
import { natsConnectionOf, Outbox, type Fact, type PublishResult } from "../lib/facts.ts";
import { latticeSettings } from "../lib/settings.ts";

export interface OutboxService extends Service {
	outbox: Outbox;
	/** Stores facts for the cloud in this site's outbox (lib/facts.ts): resolves once they are durable here. */
	publishFacts<T>(topic: string, facts: Fact<T>[]): Promise<PublishResult>;
}

/**
 * The producing end of store-and-forward, for services at an edge site: `this.publishFacts(topic, facts)` keeps
 * the facts in the site's JetStream domain (they survive the process and a cut of the hub link) and the hub
 * collects them when it can. Needs the NATS transporter connected to the site's leaf server.
 */
export function OutboxMixin(): Partial<ServiceSchema> {
	const schema = {
		async started(this: OutboxService) {
			const { topology, facts } = latticeSettings(this.broker);
			this.outbox = new Outbox(natsConnectionOf(this.broker), {
				namespace: this.broker.namespace,
				site: topology.site,
				maxAge: facts.outboxMaxAge,
				maxBytes: facts.outboxMaxBytes
			});
			await this.outbox.open();
		},

		methods: {
			publishFacts<T>(this: OutboxService, topic: string, facts: Fact<T>[]): Promise<PublishResult> {
				return this.outbox.publish(topic, facts);
			}
		}
	};
	// Moleculer types `this` in lifecycle handlers as a bare Service; these handlers need the mixin's fields.
	return schema as unknown as Partial<ServiceSchema>;
}
