import { spawn } from "node:child_process";
import path from "node:path";
import { ServiceBroker, type BrokerOptions, type ServiceSchema } from "moleculer";
import { buildConfig } from "../../moleculer.config.ts";
import { freePort, manage, ROOT, waitFor, type ManagedProcess } from "./processes.ts";

export const RUNNER = path.join(ROOT, "node_modules/moleculer/bin/moleculer-runner.mjs");

/** The shared NATS and Redis this machine (and CI) runs; suites that break things start private ones instead. */
export const NATS_URL = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
export const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

/** The cluster key every test node gets (production refuses a cluster without one); pass "" to start a node without. */
export const TEST_CLUSTER_KEY = "bGF0dGljZS10ZXN0LWNsdXN0ZXIta2V5LW5vdC1hLXNlY3JldA==";

/** The JWT secret every test node gets (a production gateway or auth service refuses to start without a key). */
export const TEST_JWT_SECRET = "lattice-test-jwt-secret-not-a-secret-0123456789";

/** A unique namespace per suite run, so concurrent runs on one NATS or Redis never meet. */
export function uniqueNamespace(prefix = "t"): string {
	return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

export interface NodeOptions {
	nodeID: string;
	/** Value of SERVICES: service names (`api,products`) or paths relative to the repo root. */
	services: string;
	/** Extra environment (TRANSPORTER, CACHER, NAMESPACE, LATTICE_* …). */
	env?: Record<string, string>;
	/** Also open the HTTP gateway on a free port. */
	gateway?: boolean;
	/** Wait for /ready. Default true. */
	waitReady?: boolean;
}

export interface LatticeNode extends ManagedProcess {
	readonly nodeID: string;
	readonly opsPort: number;
	readonly gatewayPort: number | null;
	readonly opsUrl: string;
	readonly gatewayUrl: string | null;
	/** Text of the node's /metrics. */
	metrics(): Promise<string>;
	ready(): Promise<boolean>;
}

/** Starts one Lattice node as its own process, exactly as `npm start` would, and waits until it is ready. */
export async function startNode(opts: NodeOptions): Promise<LatticeNode> {
	const opsPort = await freePort();
	const gatewayPort = opts.gateway ? await freePort() : null;
	const env: Record<string, string> = {
		...(process.env as Record<string, string>),
		NODE_ENV: "production",
		LATTICE_CLUSTER_KEY: TEST_CLUSTER_KEY,
		LATTICE_JWT_SECRET: TEST_JWT_SECRET,
		LOGLEVEL: "warn",
		NODEID: opts.nodeID,
		SERVICES: opts.services,
		LATTICE_OPS_PORT: String(opsPort),
		LATTICE_HOST: "127.0.0.1",
		PORT: String(gatewayPort ?? 0),
		...opts.env
	};
	const child = spawn(process.execPath, [RUNNER, "--config", "moleculer.config.ts", "--mask", "**/*.service.ts"], {
		cwd: ROOT,
		env,
		stdio: ["ignore", "pipe", "pipe"]
	});
	const managed = manage(child);
	const opsUrl = `http://127.0.0.1:${opsPort}`;
	const node: LatticeNode = Object.assign(managed, {
		nodeID: opts.nodeID,
		opsPort,
		gatewayPort,
		opsUrl,
		gatewayUrl: gatewayPort ? `http://127.0.0.1:${gatewayPort}` : null,
		async metrics() {
			return (await fetch(`${opsUrl}/metrics`)).text();
		},
		async ready() {
			try {
				return (await fetch(`${opsUrl}/ready`)).status === 200;
			} catch {
				return false;
			}
		}
	});
	if (opts.waitReady !== false) {
		try {
			await waitFor(
				async () => {
					if (!managed.alive()) throw new Error(`node ${opts.nodeID} exited:\n${managed.output.join("")}`);
					return node.ready();
				},
				20_000,
				`${opts.nodeID} ready`
			);
		} catch (err) {
			// A node that never got ready must not outlive the test that started it.
			await managed.kill();
			throw err;
		}
	}
	return node;
}

/** Reads one sample's value from a Prometheus exposition (sum over series whose labels contain `match`). */
export function metricValue(text: string, name: string, match: Record<string, string> = {}): number {
	let sum = 0;
	for (const line of text.split("\n")) {
		if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
		if (!Object.entries(match).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
		sum += Number(line.slice(line.lastIndexOf(" ") + 1));
	}
	return sum;
}

/**
 * An in-process broker built from Lattice's real config (no ops server, quiet logs unless `LOGLEVEL` says
 * otherwise), with the given services. For unit tests and single-process integration tests. `overrides` replaces
 * top-level broker options after the config is built, as MOL_* variables do for a spawned node (e.g. a short
 * `heartbeatTimeout` for an observer that must notice a killed peer quickly).
 */
export async function createBroker(
	env: Record<string, string> = {},
	// eslint-disable-next-line @typescript-eslint/no-explicit-any -- schemas carry their own settings, methods and state types
	services: ServiceSchema<any, any, any, any>[] = [],
	overrides: Partial<BrokerOptions> = {}
): Promise<ServiceBroker> {
	const config = buildConfig({
		LATTICE_OPS_PORT: "0",
		LOGLEVEL: "warn",
		NODE_ENV: "production",
		PORT: "0",
		LATTICE_CLUSTER_KEY: TEST_CLUSTER_KEY,
		LATTICE_JWT_SECRET: TEST_JWT_SECRET,
		...env
	});
	const broker = new ServiceBroker({ ...config, ...overrides });
	for (const s of services) broker.createService(s as ServiceSchema);
	await broker.start();
	return broker;
}
