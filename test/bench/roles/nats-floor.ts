import { connect, type NatsConnection } from "nats";
import type { BrokerSpec } from "../protocol.ts";
import type { Call } from "./closed-loop.ts";

/**
 * The floor under any RPC over NATS: a request is a JSON message `{id, action, params}` published to one subject
 * per action with a reply subject, the server parses it and publishes `{id, data}` back, the client matches the
 * id in a map. No framework on either side, the same NATS and the same JSON encoding as the two systems, so how
 * close bare Moleculer (and Lattice) get to it shows how much a transit could still earn back.
 */
function subject(spec: BrokerSpec, action: string): string {
	return `${spec.namespace}.floor.${action}`;
}

export async function serveFloor(spec: BrokerSpec, actions: Record<string, (params: unknown) => unknown>): Promise<NatsConnection> {
	const nc = await connect({ servers: spec.transporter ?? undefined, name: spec.nodeID });
	for (const [action, handler] of Object.entries(actions)) {
		nc.subscribe(subject(spec, action), {
			callback: (err, msg) => {
				if (err || !msg.reply) return;
				const req = JSON.parse(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength).toString()) as {
					id: number;
					params: unknown;
				};
				msg.respond(Buffer.from(JSON.stringify({ id: req.id, data: handler(req.params) })));
			}
		});
	}
	await nc.flush();
	return nc;
}

export interface FloorClient {
	caller(action: string): Call;
	/** Resolves once a server answers `action`. */
	ready(action: string, timeoutMs: number): Promise<void>;
	close(): Promise<void>;
}

export async function floorClient(spec: BrokerSpec): Promise<FloorClient> {
	const nc = await connect({ servers: spec.transporter ?? undefined, name: spec.nodeID });
	const inbox = `${spec.namespace}.floor-reply.${spec.nodeID}`;
	const waiting = new Map<number, (data: unknown) => void>();
	let next = 1;
	nc.subscribe(inbox, {
		callback: (err, msg) => {
			if (err) return;
			const res = JSON.parse(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength).toString()) as { id: number; data: unknown };
			const resolve = waiting.get(res.id);
			if (!resolve) return;
			waiting.delete(res.id);
			resolve(res.data);
		}
	});
	await nc.flush();
	const caller =
		(action: string): Call =>
		params =>
			new Promise(resolve => {
				const id = next++;
				waiting.set(id, resolve);
				nc.publish(subject(spec, action), Buffer.from(JSON.stringify({ id, action, params })), { reply: inbox });
			});
	return {
		caller,
		async ready(action, timeoutMs) {
			const deadline = Date.now() + timeoutMs;
			for (;;) {
				const probe = await Promise.race([caller(action)({}).then(() => true), new Promise<false>(r => setTimeout(() => r(false), 200))]);
				if (probe) return;
				if (Date.now() > deadline) throw new Error(`no NATS floor server answers ${action} after ${timeoutMs} ms`);
			}
		},
		close: () => nc.drain()
	};
}
