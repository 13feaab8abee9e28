import http from "node:http";
import type { AddressInfo } from "node:net";
import type { ServiceBroker } from "moleculer";
import type { Registry } from "prom-client";

export interface OpsServerOptions {
	/** Port for /live, /ready and /metrics; 0 disables the server. Default 3001. */
	port?: number;
	/** Interface to bind. Default 0.0.0.0 (probes and scrapers come from outside the pod). */
	host?: string;
	/** Registry rendered at /metrics. */
	registry: Registry;
}

export interface OpsServerMiddleware {
	name: string;
	[hook: string]: unknown;
	/** The bound port once listening (differs from the option when it was a random port request). */
	address(): number | null;
}

type Phase = "starting" | "running" | "stopping";

/**
 * Kubernetes-facing endpoints on every node, not only on the gateway:
 * - `GET /live`: the process answers (200);
 * - `GET /ready`: 200 only while the broker runs and, in cluster mode, the transporter is connected; 503 from
 *   the moment shutdown begins, so a rolling update stops routing to the pod before it drains;
 * - `GET /metrics`: the prom-client registry.
 * The server starts before the broker does, so probes get an honest 503 rather than a refused connection.
 */
export function OpsServerMiddleware(opts: OpsServerOptions): OpsServerMiddleware {
	let phase: Phase = "starting";
	let server: http.Server | null = null;
	let broker: ServiceBroker;

	function readiness(): { ready: boolean; reasons: string[] } {
		const reasons: string[] = [];
		if (phase !== "running") reasons.push(`broker ${phase}`);
		// broker.stop() clears `started` at once but runs the `stopping` hooks only after registry.stopDelay.
		else if (!broker.started) reasons.push("broker stopping");
		const transit = broker.transit as { connected?: boolean } | undefined;
		if (transit && !transit.connected) reasons.push("transporter disconnected");
		return { ready: reasons.length === 0, reasons };
	}

	function send(res: http.ServerResponse, status: number, body: unknown): void {
		const text = JSON.stringify(body);
		res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
		res.end(text);
	}

	async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
		const path = (req.url ?? "/").split("?")[0];
		if (req.method !== "GET" && req.method !== "HEAD") {
			return send(res, 405, { name: "MethodNotAllowed", message: "Only GET", code: 405, type: "METHOD_NOT_ALLOWED" });
		}
		switch (path) {
			case "/live":
				return send(res, 200, { status: "live", nodeID: broker.nodeID });
			case "/ready": {
				const { ready, reasons } = readiness();
				return send(res, ready ? 200 : 503, { status: ready ? "ready" : "not ready", nodeID: broker.nodeID, reasons });
			}
			case "/metrics": {
				const text = await opts.registry.metrics();
				res.writeHead(200, { "content-type": opts.registry.contentType });
				res.end(text);
				return;
			}
			default:
				return send(res, 404, { name: "NotFound", message: "Not found", code: 404, type: "NOT_FOUND" });
		}
	}

	return {
		name: "OpsServer",

		address() {
			return server ? (server.address() as AddressInfo).port : null;
		},

		created(b: ServiceBroker) {
			broker = b;
		},

		async starting() {
			if (opts.port === 0) return;
			server = http.createServer((req, res) => {
				handle(req, res).catch(err => {
					broker.logger.error("Ops endpoint failed", err);
					if (!res.headersSent) send(res, 500, { name: "InternalError", message: "Ops endpoint failed", code: 500 });
					else res.destroy();
				});
			});
			server.keepAliveTimeout = 65_000;
			await new Promise<void>((resolve, reject) => {
				server!.once("error", reject);
				server!.listen(opts.port ?? 3001, opts.host ?? "0.0.0.0", () => {
					server!.off("error", reject);
					resolve();
				});
			});
			broker.logger.info(`Ops endpoints on :${(server.address() as AddressInfo).port} (/live, /ready, /metrics)`);
		},

		async started() {
			// Moleculer announces a node's services one second after they start (a debounced INFO). Until then
			// peers neither route calls to it nor send it broadcasts, so a cache invalidation would miss it.
			// Announce now, and only then report ready.
			if (broker.transit) await broker.registry.discoverer.sendLocalNodeInfo();
			phase = "running";
		},

		stopping() {
			phase = "stopping";
		},

		async stopped() {
			if (!server) return;
			const s = server;
			server = null;
			s.closeAllConnections();
			await new Promise<void>(resolve => s.close(() => resolve()));
		}
	};
}
