import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { ROOT } from "../support/processes.ts";
import type { BrokerSpec, ChildMessage, OpName, Ops, RoleName } from "./protocol.ts";

/** A forked role process (server, client or gateway) that answers typed requests. */
export interface Role {
	readonly name: string;
	readonly pid: number;
	request<K extends OpName>(op: K, arg: Ops[K][0]): Promise<Ops[K][1]>;
	stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;

interface Pending {
	resolve(value: unknown): void;
	reject(err: Error): void;
}

/** Forks `roles/<role>.ts` with Node 24 (this process's binary) and waits until its broker has started. */
export function startRole(roleName: RoleName, spec: BrokerSpec): Promise<Role> {
	const file = fileURLToPath(new URL(`./roles/${roleName}.ts`, import.meta.url));
	const proc: ChildProcess = fork(file, [JSON.stringify(spec)], {
		cwd: ROOT,
		execPath: process.execPath,
		stdio: ["ignore", "pipe", "pipe", "ipc"]
	});
	const name = `${roleName} ${spec.kind} ${spec.nodeID}`;
	const output: string[] = [];
	const keep = (b: Buffer) => {
		output.push(b.toString());
		if (output.length > 200) output.shift();
	};
	proc.stdout?.on("data", keep);
	proc.stderr?.on("data", keep);

	const pending = new Map<number, Pending>();
	let nextId = 1;
	let exited = false;
	const exit = new Promise<void>(resolve =>
		proc.once("exit", code => {
			exited = true;
			const err = new Error(`${name} exited (${code}):\n${output.join("").slice(-4000)}`);
			for (const p of pending.values()) p.reject(err);
			pending.clear();
			resolve();
		})
	);

	const role: Role = {
		name,
		pid: proc.pid!,
		request<K extends OpName>(op: K, arg: Ops[K][0]): Promise<Ops[K][1]> {
			if (exited) return Promise.reject(new Error(`${name} is not running`));
			const id = nextId++;
			return new Promise((resolve, reject) => {
				pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
				proc.send({ type: "request", id, op, arg });
			});
		},
		async stop() {
			if (exited) return;
			proc.send({ type: "stop" });
			const timer = setTimeout(() => proc.kill("SIGKILL"), STOP_GRACE_MS);
			await exit;
			clearTimeout(timer);
		}
	};

	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => {
			proc.kill("SIGKILL");
			reject(new Error(`${name} not ready after ${READY_TIMEOUT_MS} ms:\n${output.join("")}`));
		}, READY_TIMEOUT_MS);
		void exit.then(() => {
			clearTimeout(timer);
			reject(new Error(`${name} exited before it was ready:\n${output.join("").slice(-4000)}`));
		});
		proc.on("message", (msg: ChildMessage) => {
			if (msg.type === "ready") {
				clearTimeout(timer);
				resolve(role);
				return;
			}
			const p = pending.get(msg.id);
			if (!p) return;
			pending.delete(msg.id);
			if (msg.ok) p.resolve(msg.value);
			else p.reject(new Error(`${name} ${msg.error}`));
		});
	});
}
