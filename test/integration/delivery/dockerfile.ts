import { execFileSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, symlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "../../support/processes.ts";

/**
 * Just enough of the Dockerfile and .dockerignore formats to run the image's command outside Docker: the
 * tests read the real files, so the image and what the tests start cannot drift apart. Unsupported syntax
 * throws instead of being guessed at.
 */

export interface Instruction {
	keyword: string;
	/** The instruction's text after the keyword, continuation lines joined. */
	raw: string;
	/** `--name=value` flags in front of the arguments (COPY --from, HEALTHCHECK --interval …). */
	flags: Record<string, string>;
	/** Arguments: the JSON array of the exec form, or shell-like words. */
	args: string[];
	/** True when the arguments were written as a JSON array (exec form). */
	exec: boolean;
}

export interface Stage {
	name: string | null;
	from: string;
	instructions: Instruction[];
}

export interface Dockerfile {
	stages: Stage[];
	/** ARGs declared before the first FROM, with their defaults. */
	globalArgs: Record<string, string>;
}

/** Splits shell-like words: whitespace separates, quotes group, backslash escapes. */
export function words(text: string): string[] {
	const out: string[] = [];
	let cur = "";
	let quote: string | null = null;
	let started = false;
	for (let i = 0; i < text.length; i++) {
		const c = text[i]!;
		if (quote) {
			if (c === quote) quote = null;
			else if (c === "\\" && quote === '"' && i + 1 < text.length) cur += text[++i];
			else cur += c;
		} else if (c === '"' || c === "'") {
			quote = c;
			started = true;
		} else if (c === "\\" && i + 1 < text.length) {
			cur += text[++i];
			started = true;
		} else if (/\s/.test(c)) {
			if (started) out.push(cur);
			cur = "";
			started = false;
		} else {
			cur += c;
			started = true;
		}
	}
	if (quote) throw new Error(`Unterminated quote in: ${text}`);
	if (started) out.push(cur);
	return out;
}

/** Docker's variable substitution: `$NAME`, `${NAME}` and `${NAME:-default}`. */
export function substitute(text: string, vars: Record<string, string | undefined>): string {
	return text.replace(/\$(?:\{([A-Za-z_]\w*)(?::-([^}]*))?\}|([A-Za-z_]\w*))/g, (_m, braced, dflt, bare) => {
		const v = vars[(braced ?? bare) as string];
		return v === undefined || v === "" ? (dflt ?? "") : v;
	});
}

export function parseDockerfile(text: string): Dockerfile {
	const logical: string[] = [];
	let pending = "";
	for (const line of text.split("\n")) {
		if (/^\s*#/.test(line)) continue; // comments, parser directives, comment lines inside continuations
		if (/\\\s*$/.test(line)) {
			pending += line.replace(/\\\s*$/, " ");
			continue;
		}
		const full = pending + line;
		pending = "";
		if (full.trim()) logical.push(full.trim());
	}
	if (pending.trim()) logical.push(pending.trim());

	const stages: Stage[] = [];
	const globalArgs: Record<string, string> = {};
	for (const line of logical) {
		const m = /^(\w+)\s*(.*)$/s.exec(line);
		if (!m) throw new Error(`Cannot parse Dockerfile line: ${line}`);
		const keyword = m[1]!.toUpperCase();
		let rest = m[2]!.trim();
		const flags: Record<string, string> = {};
		for (let f = /^--([\w-]+)=(\S+)\s*/.exec(rest); f; f = /^--([\w-]+)=(\S+)\s*/.exec(rest)) {
			flags[f[1]!] = f[2]!;
			rest = rest.slice(f[0].length);
		}
		const exec = rest.startsWith("[");
		const args = exec ? (JSON.parse(rest) as string[]) : words(rest);
		const instruction: Instruction = { keyword, raw: rest, flags, args, exec };
		if (keyword === "FROM") {
			const from = substitute(args[0]!, globalArgs);
			const name = args[1]?.toUpperCase() === "AS" ? (args[2] ?? null) : null;
			stages.push({ name, from, instructions: [] });
		} else if (stages.length === 0) {
			if (keyword !== "ARG") throw new Error(`Only ARG may precede FROM, got ${keyword}`);
			for (const a of args) {
				const [k, ...v] = a.split("=");
				globalArgs[k!] = v.join("=");
			}
		} else {
			stages.at(-1)!.instructions.push(instruction);
		}
	}
	return { stages, globalArgs };
}

export function readDockerfile(): Dockerfile {
	return parseDockerfile(readFileSync(path.join(ROOT, "Dockerfile"), "utf8"));
}

/** `KEY=value …` pairs (ENV, LABEL), or the legacy `ENV KEY value` form. */
function pairs(instr: Instruction, vars: Record<string, string | undefined>): [string, string][] {
	if (instr.args.length > 0 && !instr.args[0]!.includes("=")) {
		const [key, ...value] = words(instr.raw);
		return [[key!, substitute(value.join(" "), vars)]];
	}
	// Substitution sees the values set earlier in the same instruction only from the next instruction on.
	return instr.args.map(a => {
		const i = a.indexOf("=");
		if (i < 0) throw new Error(`Expected KEY=value in ${instr.keyword} ${instr.raw}`);
		return [a.slice(0, i), substitute(a.slice(i + 1), vars)];
	});
}

export interface ImageConfig {
	/** The final stage's environment on top of `baseEnv` (what the base image defines). */
	env: Record<string, string>;
	labels: Record<string, string>;
	workdir: string;
	user: string | null;
	entrypoint: string[];
	cmd: string[];
	healthcheck: { flags: Record<string, string>; test: string[] } | null;
	expose: number[];
}

/** The runtime configuration of the final stage, as `docker inspect` would report it. */
export function imageConfig(df: Dockerfile, baseEnv: Record<string, string>): ImageConfig {
	const stage = df.stages.at(-1);
	if (!stage) throw new Error("Dockerfile has no stage");
	const cfg: ImageConfig = {
		env: { ...baseEnv },
		labels: {},
		workdir: "/",
		user: null,
		entrypoint: [],
		cmd: [],
		healthcheck: null,
		expose: []
	};
	for (const instr of stage.instructions) {
		switch (instr.keyword) {
			case "ENV":
				for (const [k, v] of pairs(instr, cfg.env)) cfg.env[k] = v;
				break;
			case "LABEL":
				for (const [k, v] of pairs(instr, cfg.env)) cfg.labels[k] = v;
				break;
			case "WORKDIR":
				cfg.workdir = path.posix.resolve(cfg.workdir, substitute(instr.args[0]!, cfg.env));
				break;
			case "USER":
				cfg.user = substitute(instr.args[0]!, cfg.env);
				break;
			case "EXPOSE":
				cfg.expose.push(...instr.args.map(a => Number.parseInt(substitute(a, cfg.env), 10)));
				break;
			case "ENTRYPOINT":
				if (!instr.exec) throw new Error("ENTRYPOINT must use the exec form (JSON array)");
				cfg.entrypoint = instr.args;
				cfg.cmd = []; // Docker resets CMD when ENTRYPOINT is set after it
				break;
			case "CMD":
				if (!instr.exec) throw new Error("CMD must use the exec form (JSON array)");
				cfg.cmd = instr.args;
				break;
			case "HEALTHCHECK": {
				const [kind, ...rest] = instr.args;
				if (kind !== "CMD") throw new Error(`Unsupported HEALTHCHECK form: ${instr.raw}`);
				const after = instr.raw.replace(/^CMD\s+/, "");
				cfg.healthcheck = { flags: instr.flags, test: after.startsWith("[") ? (JSON.parse(after) as string[]) : rest };
				break;
			}
			default:
				break;
		}
	}
	return cfg;
}

/** A .dockerignore matcher with Docker's rules: the last matching pattern wins, and a pattern that matches a
 * directory matches everything under it. */
export class DockerIgnore {
	private readonly rules: { negate: boolean; re: RegExp; literalPrefix: string }[];

	constructor(text: string) {
		this.rules = text
			.split("\n")
			.map(l => l.trim())
			.filter(l => l && !l.startsWith("#"))
			.map(l => {
				const negate = l.startsWith("!");
				const pattern = path.posix.normalize((negate ? l.slice(1) : l).trim()).replace(/^\/+|\/+$/g, "");
				return { negate, re: globToRegExp(pattern), literalPrefix: pattern.split(/[*?[]/)[0]! };
			});
	}

	static read(): DockerIgnore {
		return new DockerIgnore(readFileSync(path.join(ROOT, ".dockerignore"), "utf8"));
	}

	/** True when `rel` (a path relative to the context root, `/`-separated) stays out of the build context. */
	excludes(rel: string): boolean {
		const parts = rel.split("/");
		const candidates = parts.map((_p, i) => parts.slice(0, i + 1).join("/"));
		let excluded = false;
		for (const rule of this.rules) {
			if (candidates.some(c => rule.re.test(c))) excluded = !rule.negate;
		}
		return excluded;
	}

	/** Whether a negated pattern could re-include something under an excluded directory. */
	mayReinclude(dir: string): boolean {
		return this.rules.some(r => r.negate && (r.literalPrefix.startsWith(dir + "/") || r.literalPrefix === ""));
	}
}

function globToRegExp(glob: string): RegExp {
	let re = "";
	for (let i = 0; i < glob.length; i++) {
		const c = glob[i]!;
		if (c === "*" && glob[i + 1] === "*") {
			i++;
			if (glob[i + 1] === "/") {
				i++;
				re += "(?:.*/)?";
			} else re += ".*";
		} else if (c === "*") re += "[^/]*";
		else if (c === "?") re += "[^/]";
		else if (c === "[") {
			const end = glob.indexOf("]", i);
			re += glob.slice(i, end + 1);
			i = end;
		} else re += c.replace(/[.+^${}()|\\]/g, "\\$&");
	}
	return new RegExp(`^${re}$`);
}

/** Files of the repository that `docker build .` would send as context, relative to ROOT. */
export function buildContext(ignore: DockerIgnore): string[] {
	const out: string[] = [];
	const walk = (rel: string) => {
		for (const entry of readdirSync(path.join(ROOT, rel), { withFileTypes: true })) {
			const child = rel ? `${rel}/${entry.name}` : entry.name;
			if (entry.isDirectory()) {
				if (ignore.excludes(child) && !ignore.mayReinclude(child)) continue;
				walk(child);
			} else if (!ignore.excludes(child)) out.push(child);
		}
	};
	walk("");
	return out.sort();
}

interface LockPackage {
	dev?: boolean;
	optional?: boolean;
	link?: boolean;
	bin?: Record<string, string>;
}

/**
 * What `npm ci --omit=dev` puts in node_modules, taken from the repository's own install: the lockfile says
 * which packages are production ones and where they live; dev-only packages (and their binaries, such as
 * the `node` devDependency's) are left out, as in the image, and optional ones too with `--omit=optional`.
 */
export function copyProductionModules(dest: string, omitOptional = false): string[] {
	const lock = JSON.parse(readFileSync(path.join(ROOT, "package-lock.json"), "utf8")) as {
		packages: Record<string, LockPackage>;
	};
	const copied: string[] = [];
	for (const [key, meta] of Object.entries(lock.packages)) {
		if (!key.startsWith("node_modules/") || meta.dev || (omitOptional && meta.optional)) continue;
		const src = path.join(ROOT, key);
		if (!existsSync(src)) {
			if (meta.optional) continue; // another platform's optional binary
			throw new Error(`${key} is in package-lock.json but not installed: run npm ci`);
		}
		if (meta.link) throw new Error(`${key} is a workspace link: not supported by this emulation`);
		const nested = path.join(src, "node_modules");
		cpSync(src, path.join(dest, key), { recursive: true, verbatimSymlinks: true, filter: s => s !== nested });
		copied.push(key);
		const top = /^node_modules\/((?:@[^/]+\/)?[^/]+)$/.exec(key);
		if (top && meta.bin) {
			const binDir = path.join(dest, "node_modules/.bin");
			mkdirSync(binDir, { recursive: true });
			for (const [name, target] of Object.entries(meta.bin)) {
				symlinkSync(path.posix.join("..", top[1]!, target), path.join(binDir, name));
			}
		}
	}
	return copied;
}

export interface StagedImage {
	/** Host directory standing for the image's WORKDIR. */
	appDir: string;
	config: ImageConfig;
	/** Maps a path inside the image to the staged copy (WORKDIR only; other paths are unchanged). */
	hostPath(p: string): string;
}

/** Whether a user that owns nothing on the way can reach and run `file` (as the image's USER runs Node). */
export function othersCanRun(file: string): boolean {
	for (let p = path.resolve(file); ; p = path.dirname(p)) {
		if (!(statSync(p).mode & 0o001)) return false;
		if (p === path.dirname(p)) return true;
	}
}

/**
 * The final stage's one RUN that adds to WORKDIR, `node lib/compile-cache.cli.ts <dir> [--user u:g]`, run on the
 * staged copy with this toolchain's Node. `--user` is kept when this process can switch to that user (root, and
 * Node reachable by it), as the image test then runs the image's command as that user; otherwise the cache is
 * made for the current user, who then runs the command.
 */
function runCompileCache(cmd: string[], workdir: string, hostPath: (p: string) => string): void {
	const [, script, ...rest] = cmd;
	const user = rest.indexOf("--user");
	const canSwitch = process.getuid?.() === 0 && othersCanRun(process.execPath);
	if (user >= 0 && !canSwitch) rest.splice(user, 2);
	const args = rest.map(a => (a.startsWith("/") ? hostPath(a) : a));
	execFileSync(process.execPath, [script!, ...args], { cwd: hostPath(workdir), stdio: "pipe" });
}

/**
 * Lays out the final stage's WORKDIR in a temporary directory by following its COPY instructions: context
 * files filtered by .dockerignore, and node_modules from a stage that ran `npm ci --omit=dev`; then the compile
 * cache its RUN makes (other RUN instructions install system packages, which the image test does without).
 * Directories are world-readable and files keep root ownership, as in the image, so an unprivileged user cannot
 * write.
 */
export function stageImage(df: Dockerfile, baseEnv: Record<string, string>): StagedImage {
	const config = imageConfig(df, baseEnv);
	const root = mkdtempSync(path.join(os.tmpdir(), "lattice-image-"));
	chmodSync(root, 0o755);
	const appDir = path.join(root, "app");
	mkdirSync(appDir);
	const hostPath = (p: string) =>
		p === config.workdir || p.startsWith(config.workdir + "/") ? path.join(appDir, p.slice(config.workdir.length)) : p;
	const ignore = DockerIgnore.read();
	const final = df.stages.at(-1)!;
	let workdir = "/";
	for (const instr of final.instructions) {
		if (instr.keyword === "WORKDIR") workdir = path.posix.resolve(workdir, instr.args[0]!);
		if (instr.keyword === "RUN") {
			const cmd = words(instr.raw);
			if (cmd[0] === "node" && cmd[1] === "lib/compile-cache.cli.ts") runCompileCache(cmd, workdir, hostPath);
			continue;
		}
		if (instr.keyword !== "COPY") continue;
		const [dest, ...srcs] = [...instr.args].reverse();
		const target = hostPath(path.posix.resolve(workdir, dest!));
		if (instr.flags.from) {
			const from = df.stages.find(s => s.name === instr.flags.from);
			const fromWorkdir = from?.instructions.find(i => i.keyword === "WORKDIR")?.args[0];
			const install = from?.instructions.find(i => i.keyword === "RUN" && /npm ci\b.*--omit=dev/.test(i.raw));
			if (!from || !install || srcs.length !== 1 || srcs[0] !== `${fromWorkdir}/node_modules`) {
				throw new Error(`Unsupported COPY --from: ${instr.raw} (only <deps WORKDIR>/node_modules after npm ci --omit=dev)`);
			}
			if (path.basename(target) !== "node_modules") throw new Error(`COPY --from must target node_modules: ${instr.raw}`);
			copyProductionModules(path.dirname(target), /--omit=optional\b/.test(install.raw));
			continue;
		}
		const files = buildContext(ignore);
		for (const src of srcs.reverse()) {
			const norm = path.posix.normalize(src).replace(/\/$/, "");
			const selected = norm === "." ? files : files.filter(f => f === norm || f.startsWith(norm + "/"));
			if (selected.length === 0) throw new Error(`COPY source ${src} is not in the build context`);
			for (const f of selected) {
				// `COPY dir dest` copies dir's contents into dest; `COPY file dest/` puts the file in dest.
				const rel = norm === "." ? f : f === norm ? path.basename(f) : f.slice(norm.length + 1);
				const to = path.join(target, rel);
				mkdirSync(path.dirname(to), { recursive: true });
				cpSync(path.join(ROOT, f), to);
			}
		}
	}
	chmodTree(root);
	return { appDir, config, hostPath };
}

function chmodTree(dir: string): void {
	chmodSync(dir, 0o755);
	for (const e of readdirSync(dir, { withFileTypes: true })) {
		if (e.isDirectory()) chmodTree(path.join(dir, e.name));
	}
}

/** Every file under `dir`, relative to it (symlinks listed, not followed). */
export function listFiles(dir: string, rel = ""): string[] {
	const out: string[] = [];
	for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
		const child = rel ? `${rel}/${e.name}` : e.name;
		if (e.isDirectory()) out.push(...listFiles(dir, child));
		else out.push(child);
	}
	return out;
}
