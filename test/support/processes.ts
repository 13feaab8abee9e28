import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root, so helpers work whatever the test's cwd. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** A free TCP port on loopback (the OS picks it; the tiny race before reuse is acceptable in tests). */
export function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const srv = net.createServer();
		srv.unref();
		srv.on("error", reject);
		srv.listen(0, "127.0.0.1", () => {
			const { port } = srv.address() as net.AddressInfo;
			srv.close(() => resolve(port));
		});
	});
}

export function sleep(ms: number): Promise<void> {
	return new Promise(r => setTimeout(r, ms));
}

type Truthy<T> = Exclude<T, false | 0 | "" | null | undefined>;

/** Polls `check` until it returns a truthy value or `timeoutMs` passes; returns that value. */
export async function waitFor<T>(
	check: () => T | Promise<T>,
	timeoutMs = 10_000,
	what = "condition",
	everyMs = 50
): Promise<Truthy<T>> {
	const deadline = Date.now() + timeoutMs;
	let last: unknown;
	for (;;) {
		try {
			const v = await check();
			if (v) return v as Truthy<T>;
		} catch (err) {
			last = err;
		}
		if (Date.now() > deadline) {
			throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
		}
		await sleep(everyMs);
	}
}

function portOpen(port: number): Promise<boolean> {
	return new Promise(resolve => {
		const s = net.connect(port, "127.0.0.1");
		s.once("connect", () => {
			s.destroy();
			resolve(true);
		});
		s.once("error", () => resolve(false));
	});
}

/** A child process with its output kept for assertions and post-mortems. */
export interface ManagedProcess {
	readonly pid: number;
	readonly proc: ChildProcess;
	readonly output: string[];
	/** Resolves with the exit code (or signal name) once the process is gone. */
	readonly exited: Promise<number | string>;
	/** SIGTERM, then SIGKILL after `graceMs`. */
	stop(graceMs?: number): Promise<number | string>;
	/** SIGKILL: no goodbye, no DISCONNECT packet. */
	kill(): Promise<number | string>;
	alive(): boolean;
}

export function manage(proc: ChildProcess): ManagedProcess {
	const output: string[] = [];
	const keep = (b: Buffer) => {
		output.push(b.toString());
		if (output.length > 2000) output.splice(0, output.length - 2000);
	};
	proc.stdout?.on("data", keep);
	proc.stderr?.on("data", keep);
	let done = false;
	const exited = new Promise<number | string>(resolve =>
		proc.once("exit", (code, signal) => {
			done = true;
			resolve(code ?? signal ?? -1);
		})
	);
	return {
		pid: proc.pid!,
		proc,
		output,
		exited,
		alive: () => !done,
		async stop(graceMs = 10_000) {
			if (done) return exited;
			proc.kill("SIGTERM");
			const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
			const r = await exited;
			clearTimeout(t);
			return r;
		},
		async kill() {
			if (!done) proc.kill("SIGKILL");
			return exited;
		}
	};
}

export interface NatsServer {
	readonly port: number;
	readonly url: string;
	process: ManagedProcess;
	/** Stops the server (SIGKILL when `hard`), keeping its port and JetStream directory for `start()`. */
	stop(hard?: boolean): Promise<void>;
	start(): Promise<void>;
	/** Stops it for good and deletes its data. */
	destroy(): Promise<void>;
}

export interface NatsServerOptions {
	jetstream?: boolean;
	/** Path of a nats-server config file (leaf nodes, accounts, permissions). */
	config?: string;
	port?: number;
	args?: string[];
}

/** A private nats-server on a free loopback port: for tests that kill, restart or partition NATS. */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServer> {
	const port = opts.port ?? (await freePort());
	const dir = mkdtempSync(path.join(os.tmpdir(), "lattice-nats-"));
	const args = ["-a", "127.0.0.1", "-p", String(port)];
	if (opts.config) args.push("-c", opts.config);
	if (opts.jetstream) args.push("-js", "-sd", dir);
	args.push(...(opts.args ?? []));
	const launch = async () => {
		const p = manage(spawn("nats-server", args, { stdio: ["ignore", "pipe", "pipe"] }));
		await waitFor(async () => (await portOpen(port)) || (!p.alive() && Promise.reject(new Error(p.output.join("")))), 10_000, `nats-server on ${port}`);
		return p;
	};
	const server: NatsServer = {
		port,
		url: `nats://127.0.0.1:${port}`,
		process: await launch(),
		async stop(hard = false) {
			if (hard) await server.process.kill();
			else await server.process.stop();
		},
		async start() {
			server.process = await launch();
		},
		async destroy() {
			await server.process.kill();
			rmSync(dir, { recursive: true, force: true });
		}
	};
	return server;
}

export interface RedisServer {
	readonly port: number;
	readonly url: string;
	process: ManagedProcess;
	stop(): Promise<void>;
	start(): Promise<void>;
}

/** A private, non-persistent redis-server on a free loopback port. */
export async function startRedisServer(): Promise<RedisServer> {
	const port = await freePort();
	const launch = async () => {
		const p = manage(
			spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"], {
				stdio: ["ignore", "pipe", "pipe"]
			})
		);
		await waitFor(() => portOpen(port), 10_000, `redis-server on ${port}`);
		return p;
	};
	const server: RedisServer = {
		port,
		url: `redis://127.0.0.1:${port}`,
		process: await launch(),
		async stop() {
			await server.process.kill();
		},
		async start() {
			server.process = await launch();
		}
	};
	return server;
}
