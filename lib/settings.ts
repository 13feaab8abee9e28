import type { ServiceBroker } from "moleculer";

/** Where a node runs. Advertised in the node's metadata so every peer sees it. */
export interface Topology {
	region: string;
	zone: string;
	site: string;
	role: "cloud" | "edge";
}

/**
 * Lattice's own settings, resolved once by moleculer.config.ts and handed to services through the broker
 * options (`broker.options.lattice`), so that services and mixins never read the environment.
 */
export interface LatticeSettings {
	production: boolean;
	topology: Topology;
	gateway: { port: number; host: string };
	ops: { port: number; host: string };
	/** PostgreSQL for moleculer-db services; url null keeps the in-memory adapter. */
	database: { url: string | null; schema: string };
}

export const defaultSettings: LatticeSettings = {
	production: false,
	topology: { region: "local", zone: "local", site: "local", role: "cloud" },
	gateway: { port: 3000, host: "0.0.0.0" },
	ops: { port: 3001, host: "0.0.0.0" },
	database: { url: null, schema: "public" }
};

/** The settings a broker was configured with; a broker built without Lattice's config gets the defaults. */
export function latticeSettings(broker: ServiceBroker): LatticeSettings {
	const s = (broker.options as { lattice?: LatticeSettings }).lattice;
	return s ?? defaultSettings;
}
