import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "../support/processes.ts";

export interface MachineInfo {
	hostname: string;
	cpu: string;
	cores: number;
	memoryMiB: number;
	kernel: string;
	node: string;
	moleculer: string;
	natsServer: string;
	gitCommit: string;
}

function tryRun(cmd: string, args: string[]): string {
	try {
		return execFileSync(cmd, args, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
	} catch {
		return "unknown";
	}
}

function packageVersion(name: string): string {
	try {
		const pkg = JSON.parse(readFileSync(path.join(ROOT, "node_modules", name, "package.json"), "utf8")) as { version: string };
		return pkg.version;
	} catch {
		return "unknown";
	}
}

export function machineInfo(): MachineInfo {
	const status = tryRun("git", ["status", "--porcelain"]);
	return {
		hostname: os.hostname(),
		cpu: os.cpus()[0]?.model ?? "unknown",
		cores: os.availableParallelism(),
		memoryMiB: Math.round(os.totalmem() / 2 ** 20),
		kernel: `${os.type()} ${os.release()}`,
		node: process.version,
		moleculer: packageVersion("moleculer"),
		natsServer: tryRun("nats-server", ["--version"]),
		// Figures from an uncommitted tree say so.
		gitCommit: tryRun("git", ["rev-parse", "--short", "HEAD"]) + (status && status !== "unknown" ? "+dirty" : "")
	};
}
