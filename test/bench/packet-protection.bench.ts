import { execFileSync, fork, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ServiceBroker, type BrokerOptions, type Context } from "moleculer";
import { buildConfig } from "../../moleculer.config.ts";
import { defaultCipher, sodium } from "../../lib/packet-seal.ts";
import { TEST_CLUSTER_KEY, uniqueNamespace } from "../support/cluster.ts";
import { startNatsServer, type NatsServer } from "../support/processes.ts";

/**
 * Cost of packet protection (issue 3, item 8): a remote call between two processes over NATS, Lattice's production
 * config with and without the sealed envelope, closed loop at c=16, systems interleaved round by round in one run.
 * Next to it, the alternatives: ChaCha20-Poly1305, an HMAC-only envelope, and unprotected packets over a TLS link
 * to NATS. Each system gets its own nats-server (plain, or TLS-only for the TLS case), so none queues behind another
 * or behind other work on a shared server.
 * `npm exec -- node test/bench/packet-protection.bench.ts [rounds] [seconds per cell]`.
 */

type Mode = "unprotected" | "aes-256-gcm" | "chacha20-poly1305" | "hmac-only" | "nats-tls";
const MODES: Mode[] = ["unprotected", "aes-256-gcm", "chacha20-poly1305", "hmac-only", "nats-tls"];
const CONCURRENCY = 16;
const PAYLOAD = { id: 42, name: "Product 42", price: 24.5, tags: ["coffee", "beans"] };

interface Spec {
	role: "server" | "client";
	mode: Mode;
	namespace: string;
	transporter: string;
	/** CA file for the TLS case. */
	ca?: string;
}

type Msg = { type: "ready" } | { type: "result"; calls: number; seconds: number; cpuUs: number; errors: number } | { type: "cpu"; cpuUs: number };

function cpuUs(): number {
	const u = process.cpuUsage();
	return u.user + u.system;
}

function options(spec: Spec): BrokerOptions {
	const env: Record<string, string> = {
		NODE_ENV: "production",
		LOGLEVEL: "warn",
		NAMESPACE: spec.namespace,
		NODEID: `${spec.namespace}-${spec.role}`,
		TRANSPORTER: spec.transporter,
		LATTICE_OPS_PORT: "0",
		LATTICE_HOST: "127.0.0.1",
		LATTICE_CLUSTER_KEY: TEST_CLUSTER_KEY
	};
	if (spec.mode === "aes-256-gcm" || spec.mode === "chacha20-poly1305") env.LATTICE_CLUSTER_CIPHER = spec.mode;
	if (spec.ca) env.LATTICE_NATS_TLS_CA = spec.ca;
	const config: BrokerOptions = buildConfig(env);
	if (spec.mode === "unprotected" || spec.mode === "hmac-only" || spec.mode === "nats-tls") {
		config.middlewares = config.middlewares?.filter(m => typeof m !== "object" || m.name !== "PacketProtection");
	}
	if (spec.mode === "hmac-only") config.middlewares = [hmacOnly(), ...(config.middlewares ?? [])];
	return config;
}

/**
 * The alternative the notes suggest measuring: authenticity only (HMAC-SHA-256 with a KeyObject, 16-byte tag over
 * the packet type and data), confidentiality left to NATS TLS. Bench-only: no replay window, no key rotation, so it
 * is a lower bound on what such a design would cost.
 */
function hmacOnly(): { name: string; [hook: string]: unknown } {
	const key = crypto.createSecretKey(Buffer.from(TEST_CLUSTER_KEY, "base64"));
	const mac = (type: string, data: Buffer) => crypto.createHmac("sha256", key).update(type).update(data).digest().subarray(0, 16);
	return {
		name: "HmacOnly",
		transporterSend(next: (topic: string, data: Buffer, meta: { packet: { type: string } }) => unknown) {
			return (topic: string, data: Buffer, meta: { packet: { type: string } }) =>
				next(topic, Buffer.concat([data, mac(meta.packet.type, data)]), meta);
		},
		transporterReceive(next: (cmd: string, data: Buffer, s: unknown) => unknown) {
			return (cmd: string, data: Buffer, s: unknown) => {
				if (data.length < 16) return;
				const body = data.subarray(0, data.length - 16);
				if (!crypto.timingSafeEqual(mac(cmd, body), data.subarray(data.length - 16))) return;
				return next(cmd, body, s);
			};
		}
	};
}

async function child(spec: Spec): Promise<void> {
	const broker = new ServiceBroker(options(spec));
	if (spec.role === "server") {
		broker.createService({ name: "bench", actions: { echo: { public: true, handler: (ctx: Context) => ctx.params } } });
	}
	await broker.start();
	if (spec.role === "client") await broker.waitForServices("bench", 20_000);
	process.on("message", async (m: { type: "run"; ms: number } | { type: "cpu" } | { type: "stop" }) => {
		if (m.type === "stop") {
			await broker.stop();
			process.exit(0);
		}
		if (m.type === "cpu") return process.send!({ type: "cpu", cpuUs: cpuUs() } satisfies Msg);
		let calls = 0;
		let errors = 0;
		const cpu0 = cpuUs();
		const t0 = performance.now();
		const stopAt = t0 + m.ms;
		await Promise.all(
			Array.from({ length: CONCURRENCY }, async () => {
				while (performance.now() < stopAt) {
					try {
						await broker.call("bench.echo", PAYLOAD);
						calls++;
					} catch {
						errors++;
					}
				}
			})
		);
		process.send!({ type: "result", calls, errors, seconds: (performance.now() - t0) / 1000, cpuUs: cpuUs() - cpu0 } satisfies Msg);
	});
	process.on("disconnect", () => process.exit(0));
	process.send!({ type: "ready" } satisfies Msg);
}

interface Child {
	proc: ChildProcess;
	ask<T extends Msg>(m: object): Promise<T>;
}

function start(spec: Spec): Promise<Child> {
	const proc = fork(fileURLToPath(import.meta.url), [JSON.stringify(spec)], { execPath: process.execPath, stdio: ["ignore", "inherit", "inherit", "ipc"] });
	const ask = <T extends Msg>(m: object) =>
		new Promise<T>(resolve => {
			proc.once("message", (r: T) => resolve(r));
			proc.send(m);
		});
	return new Promise((resolve, reject) => {
		proc.once("message", () => resolve({ proc, ask }));
		proc.once("exit", code => reject(new Error(`${spec.role} ${spec.mode} exited with ${code}`)));
	});
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A throw-away CA and server certificate for the TLS-only nats-server. */
function tlsFiles(dir: string): { ca: string; conf: string } {
	const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
	openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=bench-ca");
	openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server");
	writeFileSync(path.join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
	openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "server.ext");
	const conf = path.join(dir, "tls.conf");
	writeFileSync(conf, `tls { cert_file: "${path.join(dir, "server.crt")}", key_file: "${path.join(dir, "server.key")}" }\n`);
	return { ca: path.join(dir, "ca.crt"), conf };
}

async function orchestrate(rounds: number, seconds: number): Promise<void> {
	const dir = mkdtempSync(path.join(os.tmpdir(), "lattice-bench-pp-"));
	const tls = tlsFiles(dir);
	const servers: NatsServer[] = [];
	const systems: Array<{ mode: Mode; server: Child; client: Child; rates: number[]; cpu: number[] }> = [];
	for (const mode of MODES) {
		const nats = await startNatsServer(mode === "nats-tls" ? { config: tls.conf } : {});
		servers.push(nats);
		const base = {
			mode,
			namespace: uniqueNamespace(`bench-pp-${mode}`),
			transporter: mode === "nats-tls" ? `tls://127.0.0.1:${nats.port}` : nats.url,
			ca: mode === "nats-tls" ? tls.ca : undefined
		};
		const server = await start({ ...base, role: "server" });
		const client = await start({ ...base, role: "client" });
		systems.push({ mode, server, client, rates: [], cpu: [] });
	}
	const out = (s: string) => process.stdout.write(s);
	out(`packet protection: ${os.cpus().length} cores, Node ${process.version}, c=${CONCURRENCY}, ${rounds} rounds × ${seconds} s, load ${os.loadavg()[0]!.toFixed(2)}\n`);
	for (const s of systems) await s.client.ask({ type: "run", ms: 2000 });
	for (let r = 0; r < rounds; r++) {
		// Rotate the order so no system always runs first (or right after the same neighbour).
		const order = systems.map((_, i) => systems[(i + r) % systems.length]!);
		for (const s of order) {
			const before = await s.server.ask<{ type: "cpu"; cpuUs: number }>({ type: "cpu" });
			const res = await s.client.ask<Extract<Msg, { type: "result" }>>({ type: "run", ms: seconds * 1000 });
			const after = await s.server.ask<{ type: "cpu"; cpuUs: number }>({ type: "cpu" });
			s.rates.push(res.calls / res.seconds);
			s.cpu.push((res.cpuUs + after.cpuUs - before.cpuUs) / Math.max(1, res.calls));
			out(`  round ${r + 1} ${s.mode}: ${Math.round(res.calls / res.seconds)} calls/s${res.errors ? `, ${res.errors} errors` : ""}\n`);
		}
	}
	const base = median(systems[0]!.rates);
	const label = (mode: Mode) => {
		if (mode !== "aes-256-gcm" && mode !== "chacha20-poly1305") return mode;
		const how = mode === "chacha20-poly1305" && sodium() ? "libsodium" : "node:crypto";
		return `${mode} (${how}${mode === defaultCipher() ? ", the default" : ""})`;
	};
	out(`\n| system | calls/s (median) | vs unprotected | client+server CPU µs/call |\n|---|---|---|---|\n`);
	for (const s of systems) {
		const rate = median(s.rates);
		out(`| ${label(s.mode)} | ${Math.round(rate)} | ${(((rate - base) / base) * 100).toFixed(1)}% | ${median(s.cpu).toFixed(1)} |\n`);
	}
	await Promise.all(
		systems
			.flatMap(s => [s.client.proc, s.server.proc])
			.map(p => new Promise(resolve => (p.once("exit", resolve), p.send({ type: "stop" }))))
	);
	await Promise.all(servers.map(s => s.destroy()));
	rmSync(dir, { recursive: true, force: true });
}

const arg = process.argv[2];
if (arg?.startsWith("{")) await child(JSON.parse(arg) as Spec);
else await orchestrate(Number(arg ?? 5), Number(process.argv[3] ?? 5));
