import type { ChildMessage, OpName, Ops, RequestMessage } from "../protocol.ts";

export type Handlers = { [K in OpName]?: (arg: Ops[K][0]) => Promise<Ops[K][1]> };

type Incoming = RequestMessage | { type: "stop" };

function send(msg: ChildMessage): void {
	process.send?.(msg);
}

/** The spec a role was forked with (JSON in argv[2]). */
export function specFromArgv<T>(): T {
	const raw = process.argv[2];
	if (!raw) throw new Error("bench role started without a spec");
	return JSON.parse(raw) as T;
}

/**
 * Answers the orchestrator's requests until told to stop, or until the orchestrator goes away (its IPC channel
 * closes), so an interrupted bench never leaves brokers behind on the shared NATS.
 */
export function serveIpc(handlers: Handlers, stop: () => Promise<void>): void {
	let stopping = false;
	const shutdown = () => {
		if (stopping) return;
		stopping = true;
		stop().then(
			() => process.exit(0),
			() => process.exit(1)
		);
	};
	process.on("disconnect", shutdown);
	process.on("message", (msg: Incoming) => {
		if (msg.type === "stop") return shutdown();
		const handler = handlers[msg.op] as ((arg: unknown) => Promise<unknown>) | undefined;
		if (!handler) return send({ type: "reply", id: msg.id, ok: false, error: `no handler for '${msg.op}'` });
		handler(msg.arg).then(
			value => send({ type: "reply", id: msg.id, ok: true, value }),
			(err: unknown) => send({ type: "reply", id: msg.id, ok: false, error: err instanceof Error ? err.stack ?? err.message : String(err) })
		);
	});
	send({ type: "ready" });
}

/** process.cpuUsage() as one number of microseconds. */
export function cpuMicros(): number {
	const { user, system } = process.cpuUsage();
	return user + system;
}
