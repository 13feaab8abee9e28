import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, readFileSync, realpathSync, rmSync } from "node:fs";
import path from "node:path";
import { NATS_URL, TEST_CLUSTER_KEY, TEST_JWT_SECRET, uniqueNamespace } from "../../support/cluster.ts";
import { freePort, manage, ROOT, waitFor, type ManagedProcess } from "../../support/processes.ts";
import { imageConfig, listFiles, othersCanRun, readDockerfile, stageImage, words, type Dockerfile, type StagedImage } from "./dockerfile.ts";

/**
 * The image, without Docker: the Dockerfile's final stage is laid out in a temporary directory (its COPY
 * instructions, .dockerignore and a production-only node_modules), then its ENTRYPOINT and CMD run there
 * with its ENV, as its USER when the test runs as root. Node 24 from the `node` devDependency stands in for
 * the base image's, first on the image's PATH. Only tini is skipped: it forwards signals and nothing else.
 */

const df: Dockerfile = readDockerfile();
/** What the base image contributes: its PATH, with this toolchain's Node 24 where the image has its own. */
const BASE_ENV = { PATH: `${path.dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin` };
const TINI = ["/usr/bin/tini", "--"];

/** The image's USER, when this test can switch to it (as root, with Node reachable by that user). */
function userIds(image: StagedImage): { uid?: number; gid?: number } {
	if (process.getuid?.() !== 0 || !image.config.user || !othersCanRun(process.execPath)) return {};
	const [uid, gid] = image.config.user.split(":").map(Number);
	return { uid, gid: gid ?? uid };
}

function imageEnv(image: StagedImage, overrides: Record<string, string>): Record<string, string> {
	const env: Record<string, string> = { ...image.config.env, HOME: image.appDir, ...overrides };
	env.PATH = env.PATH!.split(":").map(image.hostPath).join(":");
	if (env.NODE_COMPILE_CACHE) env.NODE_COMPILE_CACHE = image.hostPath(env.NODE_COMPILE_CACHE);
	return env;
}

/** Starts the container's main process: ENTRYPOINT (after tini) + CMD, in WORKDIR, with ENV + `overrides`. */
function runImage(image: StagedImage, overrides: Record<string, string>): ManagedProcess {
	const { entrypoint, cmd, workdir } = image.config;
	assert.deepEqual(entrypoint.slice(0, 2), TINI);
	const [exe, ...args] = [...entrypoint.slice(2), ...cmd];
	return manage(
		spawn(exe!, args, {
			cwd: image.hostPath(workdir),
			env: imageEnv(image, overrides),
			stdio: ["ignore", "pipe", "pipe"],
			...userIds(image)
		})
	);
}

/** Runs the HEALTHCHECK command as Docker would inside the container; resolves with its exit code. */
function healthcheck(image: StagedImage, overrides: Record<string, string>): Promise<number> {
	const [exe, ...args] = image.config.healthcheck!.test;
	return new Promise(resolve => {
		execFile(
			exe!,
			args,
			{ cwd: image.hostPath(image.config.workdir), env: imageEnv(image, overrides), timeout: 3000, ...userIds(image) },
			err => resolve(err ? ((err as { code?: number }).code ?? 1) : 0)
		);
	});
}

async function ready(opsPort: number, proc: ManagedProcess): Promise<void> {
	await Promise.race([
		waitFor(async () => (await fetch(`http://127.0.0.1:${opsPort}/ready`)).status === 200, 30_000, "the image's process to be ready"),
		proc.exited.then(code => {
			throw new Error(`exited with ${code}:\n${proc.output.join("")}`);
		})
	]);
}

/** What a deployment provides from its Secrets: the JWT key (gateway, auth) and the cluster key (with NATS). */
const SECRETS = { LATTICE_JWT_SECRET: TEST_JWT_SECRET, LATTICE_CLUSTER_KEY: TEST_CLUSTER_KEY };

async function ports() {
	return { PORT: String(await freePort()), LATTICE_OPS_PORT: String(await freePort()), LATTICE_HOST: "127.0.0.1" };
}

describe("Dockerfile", () => {
	test("two stages on Node 24: production dependencies installed in one, nothing installed at run time", () => {
		assert.equal(df.stages.length, 2);
		const [deps, final] = df.stages as [Dockerfile["stages"][0], Dockerfile["stages"][0]];
		for (const s of df.stages) assert.match(s.from, /^node:24(?:[.-]|$)/, "the base image provides Node 24");
		assert.equal(deps.from, final.from);
		const install = deps.instructions.filter(i => i.keyword === "RUN").map(i => i.raw).join("\n");
		assert.match(install, /npm ci\b[^\n&]*--omit=dev/);
		const copies = final.instructions.filter(i => i.keyword === "COPY");
		assert.ok(copies.some(c => c.flags.from === deps.name), "node_modules comes from the deps stage");
		for (const run of final.instructions.filter(i => i.keyword === "RUN")) assert.doesNotMatch(run.raw, /npm (ci|install)/);
	});

	test("runs npm start's command as a numeric non-root user under tini, with a HEALTHCHECK on /live", () => {
		const config = imageConfig(df, BASE_ENV);
		const start = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { scripts: { start: string } }).scripts.start;
		assert.deepEqual([...config.entrypoint.slice(2), ...config.cmd], words(start), "the image runs what `npm start` runs");
		assert.deepEqual(config.entrypoint.slice(0, 2), TINI);
		assert.ok(df.stages.at(-1)!.instructions.some(i => i.keyword === "RUN" && /\btini\b/.test(i.raw)), "tini is installed");
		assert.match(config.user ?? "", /^\d+(:\d+)?$/, "numeric USER, so runAsNonRoot can be verified");
		assert.notEqual(Number(config.user!.split(":")[0]), 0);
		assert.equal(config.env.NODE_ENV, "production");
		assert.deepEqual(config.expose.sort(), [Number(config.env.PORT), Number(config.env.LATTICE_OPS_PORT)].sort());
		const hc = config.healthcheck!;
		assert.equal(hc.test[0], "node", "no curl in slim images: node itself asks");
		assert.match(hc.test.join(" "), /\/live\b/);
		assert.match(hc.test.join(" "), /LATTICE_OPS_PORT/);
		assert.match(config.labels["io.lattice.image"] ?? "", /^ghcr\.io\/[\w-]+\/[\w-]+$/);
	});

	test("the compile cache is made at build time, for the USER the image runs as, where NODE_COMPILE_CACHE points", () => {
		const config = imageConfig(df, BASE_ENV);
		const run = df.stages.at(-1)!.instructions.find(i => i.keyword === "RUN" && i.raw.includes("lib/compile-cache.cli.ts"));
		assert.ok(run, "a RUN fills the compile cache");
		const cmd = words(run.raw);
		assert.equal(cmd[2], config.env.NODE_COMPILE_CACHE, "the cache the RUN fills is the one the nodes read");
		assert.equal(cmd[cmd.indexOf("--user") + 1], config.user, "Node keys the cache by user id");
	});
});

describe("the image's command, run outside Docker", () => {
	let image: StagedImage;
	const procs: ManagedProcess[] = [];

	before(() => {
		image = stageImage(df, BASE_ENV);
	});
	after(async () => {
		await Promise.all(procs.map(p => p.stop(5000)));
		rmSync(path.dirname(image.appDir), { recursive: true, force: true });
	});

	test(".dockerignore and COPY ship the runtime sources and production dependencies only", () => {
		const files = listFiles(image.appDir);
		const own = files.filter(f => !f.startsWith("node_modules/"));
		for (const f of ["package.json", "moleculer.config.ts", "services/api.service.ts", "services/products.service.ts"]) {
			assert.ok(own.includes(f), f);
		}
		for (const f of own) {
			assert.doesNotMatch(f, /^(test|k8s|\.git|\.ci|node_modules)\/|\.test\.ts$|^Dockerfile$|^\.env/, `${f} must not be in the image`);
		}
		// Every relative import of a shipped source resolves inside the image.
		for (const f of own.filter(x => x.endsWith(".ts"))) {
			const src = readFileSync(path.join(image.appDir, f), "utf8");
			for (const m of src.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
				assert.ok(existsSync(path.join(image.appDir, path.dirname(f), m[1]!)), `${f} imports ${m[1]}, missing from the image`);
			}
		}
		assert.ok(existsSync(path.join(image.appDir, "node_modules/moleculer/package.json")));
		assert.ok(existsSync(path.join(image.appDir, "node_modules/.bin/moleculer-runner-esm")));
		for (const dev of ["node", "typescript", "eslint", "pino-pretty", "kubernetes-models"]) {
			assert.ok(!existsSync(path.join(image.appDir, "node_modules", dev)), `dev dependency ${dev} is in the image`);
		}
	});

	test("a default container serves every service, passes its HEALTHCHECK, writes nothing and exits 0 on SIGTERM", async () => {
		const env = { ...(await ports()), ...SECRETS, NAMESPACE: uniqueNamespace("image"), NODEID: "image-all-in-one" };
		const before = listFiles(image.appDir);
		const proc = runImage(image, env);
		procs.push(proc);
		await ready(Number(env.LATTICE_OPS_PORT), proc);
		// The process is Node 24 (the PATH lookup did not find the machine's older node) and, when the test
		// can switch users, runs as the image's USER.
		assert.equal(realpathSync(`/proc/${proc.pid}/exe`), realpathSync(process.execPath));
		const uid = userIds(image).uid;
		if (uid !== undefined) assert.match(readFileSync(`/proc/${proc.pid}/status`, "utf8"), new RegExp(`^Uid:\\t${uid}\\t`, "m"));

		const res = await fetch(`http://127.0.0.1:${env.PORT}/api/products`);
		assert.equal(res.status, 200, proc.output.join(""));
		const body = (await res.json()) as { rows: { name: string }[]; total: number };
		assert.equal(body.total, 3);
		assert.ok(body.rows.some(r => r.name === "Burr grinder"));
		assert.equal(await healthcheck(image, env), 0);

		assert.equal(await proc.stop(15_000), 0, proc.output.join(""));
		assert.notEqual(await healthcheck(image, env), 0, "the HEALTHCHECK fails once the process is gone");
		assert.deepEqual(listFiles(image.appDir), before, "the process wrote into its own directory");
		assert.doesNotMatch(proc.output.join(""), /EACCES|EROFS/);
	});

	test("the image's compile cache covers what a node loads: no TypeScript is stripped at start", async () => {
		const env = { ...(await ports()), ...SECRETS, NAMESPACE: uniqueNamespace("image"), NODEID: "image-cache", NODE_DEBUG_NATIVE: "COMPILE_CACHE" };
		const proc = runImage(image, env);
		procs.push(proc);
		// Node's debug output is far longer than what the process helper keeps: keep the verdicts only.
		const verdicts: string[] = [];
		let partial = "";
		proc.proc.stderr!.on("data", (b: Buffer) => {
			const lines = (partial + b.toString()).split("\n");
			partial = lines.pop()!;
			verdicts.push(...lines.filter(l => /transpile cache for StrippedTypeScript|was rejected/.test(l)));
		});
		await ready(Number(env.LATTICE_OPS_PORT), proc);
		assert.equal(await proc.stop(15_000), 0);
		assert.ok(verdicts.some(l => /retrieving transpile cache for StrippedTypeScript .*moleculer\.config\.ts\.\.\.success/.test(l)), "the cache is read");
		const stripped = verdicts.filter(l => /no transpile cache/.test(l));
		assert.deepEqual(stripped, [], "modules a node loads that lib/compile-cache.cli.ts does not");
		assert.deepEqual(verdicts.filter(l => /was rejected/.test(l)), []);
	});

	test("SERVICES picks the role: a gateway container and a catalog container meet over NATS", async () => {
		const namespace = uniqueNamespace("image");
		const common = { ...SECRETS, NAMESPACE: namespace, TRANSPORTER: NATS_URL };
		const gw = { ...(await ports()), ...common, NODEID: "image-gateway", SERVICES: "api,auth" };
		const cat = { ...(await ports()), ...common, NODEID: "image-catalog", SERVICES: "products" };
		const catalog = runImage(image, cat);
		const gateway = runImage(image, gw);
		procs.push(catalog, gateway);
		await Promise.all([ready(Number(cat.LATTICE_OPS_PORT), catalog), ready(Number(gw.LATTICE_OPS_PORT), gateway)]);

		const body = await waitFor(
			async () => {
				const res = await fetch(`http://127.0.0.1:${gw.PORT}/api/products`);
				return res.status === 200 && ((await res.json()) as { total: number });
			},
			15_000,
			"the gateway to reach the catalog"
		);
		assert.equal(body.total, 3);
		await assert.rejects(fetch(`http://127.0.0.1:${cat.PORT}/api/products`), "the catalog role opens no gateway");
		assert.equal(await gateway.stop(15_000), 0);
		assert.equal(await catalog.stop(15_000), 0);
	});
});
