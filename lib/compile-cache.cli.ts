import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { constants, createRequire, enableCompileCache, flushCompileCache } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/**
 * `node lib/compile-cache.cli.ts <dir> [--user <uid>:<gid>]`: fills Node's compile cache in `<dir>` with everything
 * a Lattice node can load, so that a node started with `NODE_COMPILE_CACHE=<dir>` compiles nothing from source and
 * never strips TypeScript: the type stripper (amaro, a WebAssembly module) is then not even loaded. The image runs
 * this at build time (see the Dockerfile); README "Footprint" has the figures.
 *
 * What is cached: every source file of the application (lib/, middlewares/, mixins/, services/, the config), the
 * moleculer-runner, every production dependency's module graph, including those a node loads only for some
 * configurations (ioredis, pg, the OpenTelemetry exporters), and what Moleculer loads when a broker is made.
 * Loading is enough: the cache holds what V8 compiled when a module was loaded, not what running it compiled
 * later. Nothing is started.
 *
 * Node uses an entry only for the same Node binary, V8 flags that change code generation, user id (part of the
 * cache directory's name), file path and file content; anything else is compiled as usual. The cache is left
 * read-only, and Node reads a cache it cannot write without complaint. `--user`, run as root, fills the cache as
 * that user (the one the image runs as) and then hands it to root: a process must not be able to change code it
 * will run.
 */

const args = process.argv.slice(2);
const userFlag = args.indexOf("--user");
const user = userFlag >= 0 ? args.splice(userFlag, 2)[1] : undefined;
const [dir] = args;
if (!dir || (userFlag >= 0 && !/^\d+:\d+$/.test(user ?? ""))) {
	process.stderr.write("usage: node lib/compile-cache.cli.ts <cache-dir> [--user <uid>:<gid>]\n");
	process.exit(2);
}

if (user) {
	const [uid, gid] = user.split(":").map(Number) as [number, number];
	if (process.getuid?.() !== 0) {
		process.stderr.write("compile-cache: --user needs root\n");
		process.exit(1);
	}
	mkdirSync(dir, { recursive: true });
	chownSync(dir, uid, gid);
	const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), dir], { uid, gid, stdio: "inherit" });
	if (run.status !== 0) process.exit(run.status ?? 1);
	readOnly(dir, { uid: 0, gid: 0 });
	process.exit(0);
}

/**
 * Directories r-x and files r-- for everyone, and the given owner: the nodes that use the cache only read it (a
 * node that loads something new would otherwise add it, and the next start would run what the last one wrote).
 */
function readOnly(p: string, owner: { uid: number; gid: number } | null): void {
	if (owner) chownSync(p, owner.uid, owner.gid);
	chmodSync(p, 0o555);
	for (const e of readdirSync(p, { withFileTypes: true })) {
		const child = path.join(p, e.name);
		if (e.isDirectory()) readOnly(child, owner);
		else {
			if (owner) chownSync(child, owner.uid, owner.gid);
			chmodSync(child, 0o444);
		}
	}
}

// Before any application module is imported: only what is loaded from here on is cached.
const enabled = enableCompileCache(dir);
if (enabled.status !== constants.compileCacheStatus.ENABLED) {
	process.stderr.write(`compile-cache: cannot use ${dir}: ${enabled.message ?? "compile cache not enabled"}\n`);
	process.exit(1);
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The application's modules; CLIs (like this one) run when imported and are not part of a node. */
function sources(sub: string): string[] {
	return readdirSync(path.join(root, sub), { recursive: true, encoding: "utf8" })
		.filter(f => f.endsWith(".ts") && !f.endsWith(".cli.ts") && !f.endsWith(".test.ts"))
		.map(f => path.join(root, sub, f));
}

const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { dependencies: Record<string, string> };
const dependencies = Object.keys(pkg.dependencies);
const modules = [
	path.join(root, "moleculer.config.ts"),
	...["lib", "middlewares", "mixins", "services"].flatMap(sources),
	// The runner's own module (its bin file starts a broker when imported; this one only defines the runner).
	path.join(path.dirname(createRequire(import.meta.url).resolve("moleculer")), "src/runner-esm.mjs")
];

for (const file of modules) await import(pathToFileURL(file).href);
// Cached as the application loads them: through their ESM entry where they have one, else as CommonJS.
for (const name of dependencies) await import(name);
// Moleculer requires some of its modules (and its validator's rules) only when a broker is made: make one from the
// real config, without starting it or loading services.
const { ServiceBroker } = await import("moleculer");
const { buildConfig } = await import("../moleculer.config.ts");
new ServiceBroker(buildConfig({ NODE_ENV: "production", LOGLEVEL: "warn", LATTICE_OPS_PORT: "0" }));

flushCompileCache();
readOnly(dir, null);
process.stdout.write(`compile-cache: ${modules.length} application modules and ${dependencies.length} dependencies cached in ${enabled.directory}\n`);
// Imported modules may hold timers or handles open; nothing here needs to run on.
process.exit(0);
