import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { freePort, ROOT, startNatsServer, type NatsServer } from "../../support/processes.ts";

/**
 * The edge topology of k8s/nats on loopback: a hub nats-server with JetStream (domain `hub`) and one leaf
 * nats-server per site (JetStream domain = the site's name), started from the repository's own configuration files
 * (k8s/nats/hub/hub.conf, k8s/nats/leaf/leaf.conf). Every leaf reaches the hub through a {@link LeafLinkProxy}, so a
 * test can cut and restore one site's link without touching any process.
 */

export const HUB_CONF = path.join(ROOT, "k8s/nats/hub/hub.conf");
export const LEAF_CONF = path.join(ROOT, "k8s/nats/leaf/leaf.conf");

/** Client credentials of every NATS server here (the k8s Secrets' role). */
export const NATS_CREDENTIALS = { LATTICE_NATS_USER: "lattice", LATTICE_NATS_PASSWORD: "lattice-test-password" };
const LEAF_CREDENTIALS = { LEAF_USER: "leaf", LEAF_PASSWORD: "leaf-test-password" };

/**
 * Renders a configuration file as nats-server would read it in a pod: `$NAME` references take the values a
 * container's environment would give them, and the fixed ports and paths of the pod become free loopback ports and
 * a temporary directory. Every placeholder must be used and every `$NAME` resolved, so a change to the files that
 * these tests no longer match fails here instead of silently testing something else.
 */
export function renderNatsConfig(text: string, env: Record<string, string>, replace: Record<string, string>): string {
	let out = text;
	for (const [from, to] of Object.entries(replace)) {
		if (!out.includes(from)) throw new Error(`NATS config has no '${from}' to replace`);
		out = out.split(from).join(to);
	}
	const resolve = (code: string) =>
		code.replace(/\$([A-Z_][A-Z0-9_]*)/g, (_m, name: string) => {
			const v = env[name];
			if (v === undefined) throw new Error(`NATS config needs $${name}`);
			return JSON.stringify(v);
		});
	// Comments may mention `$NAME` too; only the configuration before a `#` is resolved.
	return out
		.split("\n")
		.map(line => {
			const hash = line.indexOf("#");
			return hash < 0 ? resolve(line) : resolve(line.slice(0, hash)) + line.slice(hash);
		})
		.join("\n");
}

/**
 * A TCP proxy in front of the hub's leafnode port. It tells the leaf servers apart by the server name in the
 * CONNECT they send first, so one address can be advertised by the hub (leafs learn and retry advertised
 * addresses) while each site's link is cut on its own: `cut` closes that site's connection and refuses its
 * reconnects until `restore`.
 */
export class LeafLinkProxy {
	readonly port: number;
	private readonly server: net.Server;
	private readonly blocked = new Set<string>();
	private readonly links = new Map<net.Socket, { name: string | null; upstream: net.Socket }>();

	private constructor(port: number, server: net.Server) {
		this.port = port;
		this.server = server;
	}

	static async start(target: number): Promise<LeafLinkProxy> {
		const port = await freePort();
		const server = net.createServer();
		const proxy = new LeafLinkProxy(port, server);
		server.on("connection", c => proxy.accept(c, target));
		await new Promise<void>(resolve => server.listen(port, "127.0.0.1", resolve));
		return proxy;
	}

	private accept(leaf: net.Socket, target: number): void {
		const upstream = net.connect(target, "127.0.0.1");
		const link = { name: null as string | null, upstream };
		this.links.set(leaf, link);
		const close = () => {
			leaf.destroy();
			upstream.destroy();
			this.links.delete(leaf);
		};
		leaf.on("error", close).on("close", close);
		upstream.on("error", close).on("close", close);
		upstream.pipe(leaf);
		let head = "";
		const sniff = (chunk: Buffer) => {
			head += chunk.toString("latin1");
			const m = /CONNECT (\{.*?\})\r\n/.exec(head);
			if (!m) {
				if (head.length > 64 * 1024) close();
				return;
			}
			leaf.off("data", sniff);
			link.name = (JSON.parse(m[1]!) as { name?: string }).name ?? "";
			if (this.blocked.has(link.name)) return close();
			upstream.write(Buffer.from(head, "latin1"));
			leaf.pipe(upstream);
		};
		leaf.on("data", sniff);
	}

	/** Drops the leaf server `name`'s link and refuses it until restored. */
	cut(name: string): void {
		this.blocked.add(name);
		for (const [leaf, link] of this.links) if (link.name === name) leaf.destroy();
	}

	restore(name: string): void {
		this.blocked.delete(name);
	}

	/** Names of the leaf servers linked right now. */
	linked(): string[] {
		return [...this.links.values()].flatMap(l => (l.name ? [l.name] : []));
	}

	async close(): Promise<void> {
		for (const leaf of this.links.keys()) leaf.destroy();
		await new Promise<void>(resolve => this.server.close(() => resolve()));
	}
}

export interface Site {
	name: string;
	/** The leaf server's name, which the proxy cuts by. */
	server: string;
	nats: NatsServer;
}

export interface EdgeTopology {
	hub: NatsServer;
	link: LeafLinkProxy;
	sites: Map<string, Site>;
	/** Environment for a Lattice node connected to the hub (`"hub"`) or to a site's leaf server. */
	nodeEnv(at: string): Record<string, string>;
	/** Whether every leaf server currently has its link to the hub. */
	allLinked(): boolean;
	destroy(): Promise<void>;
}

async function startServer(
	dir: string,
	file: string,
	template: string,
	env: Record<string, string>,
	replace: Record<string, string>,
	port: number
): Promise<NatsServer> {
	mkdirSync(dir, { recursive: true });
	const conf = path.join(dir, file);
	writeFileSync(conf, renderNatsConfig(readFileSync(template, "utf8"), env, replace));
	return startNatsServer({ config: conf, port });
}

/** A hub and one leaf server per site, each leaf linked to the hub through the proxy. */
export async function startEdgeTopology(siteNames: string[]): Promise<EdgeTopology> {
	const root = mkdtempSync(path.join(os.tmpdir(), "lattice-edge-"));
	const [hubPort, hubMonitor, hubLeafPort] = await Promise.all([freePort(), freePort(), freePort()]);
	const link = await LeafLinkProxy.start(hubLeafPort);
	const pods = (dir: string, client: number, monitor: number) => ({
		"0.0.0.0:4222": `127.0.0.1:${client}`,
		"http_port: 8222": `http_port: ${monitor}`,
		"/data/jetstream": path.join(root, dir, "jetstream"),
		"/var/run/nats/nats.pid": path.join(root, dir, "nats.pid")
	});
	mkdirSync(path.join(root, "hub"));
	// One hub server: its cluster.conf names no routes.
	writeFileSync(path.join(root, "hub", "cluster.conf"), "# a single hub server\n");
	const hub = await startServer(
		path.join(root, "hub"),
		"hub.conf",
		HUB_CONF,
		{ POD_NAME: "hub", ...NATS_CREDENTIALS, ...LEAF_CREDENTIALS, LEAF_ADVERTISE: `127.0.0.1:${link.port}` },
		{ ...pods("hub", hubPort, hubMonitor), "0.0.0.0:7422": `127.0.0.1:${hubLeafPort}` },
		hubPort
	);
	const sites = new Map<string, Site>();
	await Promise.all(
		siteNames.map(async name => {
			const [port, monitor] = await Promise.all([freePort(), freePort()]);
			const server = `leaf-${name}`;
			const hubUrl = `nats-leaf://${LEAF_CREDENTIALS.LEAF_USER}:${LEAF_CREDENTIALS.LEAF_PASSWORD}@127.0.0.1:${link.port}`;
			const nats = await startServer(
				path.join(root, name),
				"leaf.conf",
				LEAF_CONF,
				{ POD_NAME: server, LATTICE_SITE: name, HUB_URL: hubUrl, ...NATS_CREDENTIALS },
				pods(name, port, monitor),
				port
			);
			sites.set(name, { name, server, nats });
		})
	);
	const topology: EdgeTopology = {
		hub,
		link,
		sites,
		nodeEnv(at) {
			const nats = at === "hub" ? hub : sites.get(at)?.nats;
			if (!nats) throw new Error(`no NATS server '${at}'`);
			return { TRANSPORTER: nats.url, ...NATS_CREDENTIALS };
		},
		allLinked() {
			const linked = new Set(link.linked());
			return [...sites.values()].every(s => linked.has(s.server));
		},
		async destroy() {
			await Promise.all([...sites.values()].map(s => s.nats.destroy()));
			await hub.destroy();
			await link.close();
			rmSync(root, { recursive: true, force: true });
		}
	};
	return topology;
}
