import { randomUUID } from "node:crypto";
import { ServiceBroker } from "moleculer";
import type { SerializerName } from "./protocol.ts";

export interface CodecCost {
	/** CPU for one request and its response, each serialized and deserialized once, in µs. */
	usPerCall: number;
	/** Bytes of the request packet plus the response packet, before any transport framing. */
	bytesPerCall: number;
}

/** The packets of one remote call as Moleculer 0.15's transit builds them (protocol v5). */
function packets(payload: unknown): { req: Record<string, unknown>; res: Record<string, unknown> } {
	const id = randomUUID();
	return {
		req: {
			ver: "5",
			sender: "bench-client-12345",
			id,
			action: "bench.echo",
			params: payload,
			meta: {},
			headers: {},
			timeout: 10_000,
			level: 1,
			tracing: null,
			parentID: null,
			requestID: id,
			caller: null,
			stream: false
		},
		res: { ver: "5", sender: "bench-server-12345", id, success: true, data: payload, meta: {}, headers: {}, stream: false }
	};
}

type Serializer = NonNullable<ServiceBroker["serializer"]>;

/** The serializer instance a broker configured with `name` would use (the broker is never started). */
export function serializerFor(name: SerializerName): Serializer {
	return new ServiceBroker({ logger: false, serializer: name }).serializer!;
}

/**
 * Encodes and decodes one call's packets in a loop for about `ms` of this thread's CPU time: the serializer's own
 * cost, free of the network and, being CPU time, little moved by other load on the machine.
 */
export function codecCost(serializer: Serializer, payload: unknown, ms: number): CodecCost {
	const { req, res } = packets(payload);
	const bytesPerCall = serializer.serialize(req, "REQ").length + serializer.serialize(res, "RES").length;
	const cpu = () => {
		const u = process.threadCpuUsage();
		return u.user + u.system;
	};
	const start = cpu();
	let calls = 0;
	while (cpu() - start < ms * 1000) {
		for (let i = 0; i < 100; i++) {
			serializer.deserialize(serializer.serialize(req, "REQ"), "REQ");
			serializer.deserialize(serializer.serialize(res, "RES"), "RES");
		}
		calls += 100;
	}
	return { usPerCall: (cpu() - start) / calls, bytesPerCall };
}
