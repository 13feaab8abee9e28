import type { ServiceBroker } from "moleculer";
import { defaultJwtSettings, type JwtSettings } from "./jwt-keys.ts";
import { DEMO_USERS, type UserSeed } from "./users.ts";

/** Where a node runs. Advertised in the node's metadata so every peer sees it. */
export interface Topology {
	region: string;
	zone: string;
	site: string;
	role: "cloud" | "edge";
}

/** The HTTP gateway (services/api.service.ts). */
export interface GatewaySettings {
	port: number;
	host: string;
	/** Largest request body accepted, bytes (413 beyond). */
	bodyLimit: number;
	/** Browser origins allowed by CORS: exact origins or `https://*.example.com`; empty sends no CORS headers. */
	corsOrigins: string[];
	/** Proxies (IPs or CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are believed. */
	trustedProxies: string[];
	/** Strict-Transport-Security max-age for requests that came over TLS; 0 sends none. */
	hstsMaxAge: number;
	/** Requests per client per window (0 = off); login attempts per client address per window; Redis URL shared by replicas (null = per-replica memory). */
	rateLimit: { limit: number; loginLimit: number; windowMs: number; redis: string | null };
}

/** Token issuing and checking (lib/jwt-keys.ts, lib/jwt.ts) and the login accounts of services/auth.service.ts. */
export interface AuthSettings {
	jwt: JwtSettings;
	users: UserSeed[];
}

/**
 * Lattice's own settings, resolved once by moleculer.config.ts and handed to services through the broker
 * options (`broker.options.lattice`), so that services and mixins never read the environment.
 */
export interface LatticeSettings {
	production: boolean;
	topology: Topology;
	gateway: GatewaySettings;
	auth: AuthSettings;
	ops: { port: number; host: string };
	/** PostgreSQL for moleculer-db services; url null keeps the in-memory adapter. */
	database: { url: string | null; schema: string };
	facts: FactSettings;
}

/** Store-and-forward of facts from edge sites to the cloud (lib/facts.ts). */
export interface FactSettings {
	/** JetStream domain of the hub's NATS servers (k8s/nats/hub/hub.conf). */
	hubDomain: string;
	/** Sites whose outboxes the hub collects (read by the cloud's consumers). */
	sites: string[];
	/** How long a site's outbox keeps a fact, in ms: a cut longer than this loses the oldest undelivered ones. */
	outboxMaxAge: number;
	/** A site's outbox size in bytes; once full, new facts are refused (the producer sees the error), none dropped. */
	outboxMaxBytes: number;
}

export const defaultSettings: LatticeSettings = {
	production: false,
	topology: { region: "local", zone: "local", site: "local", role: "cloud" },
	gateway: {
		port: 3000,
		host: "0.0.0.0",
		bodyLimit: 256 * 1024,
		corsOrigins: [],
		trustedProxies: [],
		hstsMaxAge: 31_536_000,
		rateLimit: { limit: 600, loginLimit: 10, windowMs: 60_000, redis: null }
	},
	auth: { jwt: defaultJwtSettings, users: [...DEMO_USERS] },
	ops: { port: 3001, host: "0.0.0.0" },
	database: { url: null, schema: "public" },
	facts: { hubDomain: "hub", sites: [], outboxMaxAge: 7 * 24 * 3_600_000, outboxMaxBytes: 256 * 1024 * 1024 }
};

/** The settings a broker was configured with; a broker built without Lattice's config gets the defaults. */
export function latticeSettings(broker: ServiceBroker): LatticeSettings {
	const s = (broker.options as { lattice?: LatticeSettings }).lattice;
	return s ?? defaultSettings;
}
