import { Errors, type ServiceBroker } from "moleculer";
import { Counter, type Registry } from "prom-client";
import { ErrorType } from "../lib/errors.ts";

export interface BusPermissionsOptions {
	/** Where `lattice_nats_permission_violations_total` goes (the node's /metrics). */
	registry?: Registry;
	/** At most one warning per this many ms. Default 10 s. */
	logIntervalMs?: number;
}

interface NatsStatus {
	type: string;
	data?: unknown;
	permissionContext?: { operation: string; subject: string };
}

interface PendingRequest {
	action?: { name?: string };
	nodeID?: string | null;
	reject(err: Error): void;
}

interface Transit {
	tx?: { client?: { status(): AsyncIterable<NatsStatus> } | null };
	pendingRequests: Map<string, PendingRequest>;
	removePendingRequest(id: string): void;
}

/**
 * When NATS refuses a publish (broker-enforced mode: the bus policy does not let this unit call that action), the
 * call would otherwise wait for its timeout: nothing will ever answer a request the server dropped. This middleware
 * watches the NATS client for permission violations, fails the calls published on the refused subject at once
 * with LATTICE_BUS_FORBIDDEN (403), counts the violation and logs it at a bounded rate. On other transporters it
 * does nothing.
 */
export function BusPermissionsMiddleware(opts: BusPermissionsOptions = {}): { name: string; [hook: string]: unknown } {
	const violations = new Counter({
		name: "lattice_nats_permission_violations_total",
		help: "Publishes and subscriptions the NATS server refused to this node (broker-enforced mode)",
		labelNames: ["operation"],
		registers: opts.registry ? [opts.registry] : []
	});
	const logInterval = opts.logIntervalMs ?? 10_000;
	let lastLog = -Infinity;

	function refused(broker: ServiceBroker, operation: string, subject: string): void {
		violations.labels(operation).inc();
		const transit = broker.transit as unknown as Transit;
		const rest = subject.startsWith(`${prefixOf(broker)}.`) ? subject.slice(prefixOf(broker).length + 1) : "";
		const dot = rest.indexOf(".");
		const [type, name] = dot < 0 ? [rest, ""] : [rest.slice(0, dot), rest.slice(dot + 1)];
		let failed = 0;
		if (operation === "publish" && (type === "REQB" || type === "REQ")) {
			for (const [id, req] of transit.pendingRequests) {
				const match = type === "REQB" ? !req.nodeID && req.action?.name === name : req.nodeID === name;
				if (!match) continue;
				transit.removePendingRequest(id);
				req.reject(
					new Errors.MoleculerClientError(
						`The bus refused this call: NATS does not let this node publish to '${subject}' (broker-enforced mode)`,
						403,
						ErrorType.BUS_FORBIDDEN,
						{ action: req.action?.name, subject }
					)
				);
				failed++;
			}
		}
		const now = Date.now();
		if (now - lastLog < logInterval) return;
		lastLog = now;
		broker.getLogger("bus-permissions").warn(
			`NATS refused ${operation} on '${subject}': the bus policy (npm run nats:permissions) does not allow it` +
				(failed ? `; failed ${failed} call(s) waiting on it` : "")
		);
	}

	return {
		name: "BusPermissions",

		started(broker: ServiceBroker) {
			const client = (broker.transit as unknown as Transit | undefined)?.tx?.client;
			if (!client || typeof client.status !== "function") return;
			void (async () => {
				for await (const s of client.status()) {
					if (s.type === "error" && s.permissionContext) refused(broker, s.permissionContext.operation, s.permissionContext.subject);
				}
			})();
		}
	};
}

function prefixOf(broker: ServiceBroker): string {
	return broker.namespace ? `MOL-${broker.namespace}` : "MOL";
}
