import { execFileSync } from "node:child_process";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPodSpec } from "kubernetes-models/v1/PodSpec";
import { ROOT } from "../../support/processes.ts";

/** The overlays a deployment uses, plus the base (which must render and validate on its own too). */
export const TARGETS = ["k8s/base", "k8s/overlays/dev", "k8s/overlays/prod", "k8s/overlays/edge"] as const;
export type Target = (typeof TARGETS)[number];

export interface Metadata {
	name: string;
	namespace?: string;
	labels?: Record<string, string>;
	annotations?: Record<string, string>;
}

export interface K8sObject {
	apiVersion: string;
	kind: string;
	metadata: Metadata;
	[field: string]: unknown;
}

/** `kubectl kustomize <dir>`: offline, no remote bases. */
export function render(target: string): K8sObject[] {
	const out = execFileSync("kubectl", ["kustomize", path.join(ROOT, target)], { encoding: "utf8", maxBuffer: 32 << 20 });
	return parseAllDocuments(out)
		.map(d => {
			if (d.errors.length) throw new Error(`${target}: ${d.errors.map(e => e.message).join("; ")}`);
			return d.toJS() as K8sObject | null;
		})
		.filter((o): o is K8sObject => o !== null);
}

export interface Workload {
	object: K8sObject;
	pod: IPodSpec;
	/** Labels of the pods it creates. */
	podLabels: Record<string, string>;
	/** The name one of its pods gets (StatefulSet: `<name>-0`). */
	podName: string;
	replicas: number | undefined;
}

export function workloads(objects: K8sObject[]): Workload[] {
	return objects
		.filter(o => o.kind === "Deployment" || o.kind === "StatefulSet")
		.map(o => {
			const spec = o.spec as { replicas?: number; template: { metadata?: Partial<Metadata>; spec: IPodSpec } };
			return {
				object: o,
				pod: spec.template.spec,
				podLabels: spec.template.metadata?.labels ?? {},
				podName: o.kind === "StatefulSet" ? `${o.metadata.name}-0` : `${o.metadata.name}-7d9f8b6c5-x2k4q`,
				replicas: spec.replicas
			};
		});
}

export function find(objects: K8sObject[], kind: string, name: string): K8sObject {
	const o = objects.find(x => x.kind === kind && x.metadata.name === name);
	if (!o) throw new Error(`${kind} ${name} is referenced but not rendered`);
	return o;
}

function configMapValue(objects: K8sObject[], name: string, key: string): string {
	const v = (find(objects, "ConfigMap", name).data as Record<string, string> | undefined)?.[key];
	if (v === undefined) throw new Error(`ConfigMap ${name} has no key ${key}`);
	return v;
}

function secretData(objects: K8sObject[], name: string): Record<string, string> {
	const s = find(objects, "Secret", name);
	const data = Object.fromEntries(
		Object.entries((s.data ?? {}) as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")])
	);
	return { ...data, ...((s.stringData ?? {}) as Record<string, string>) };
}

function secretValue(objects: K8sObject[], name: string, key: string): string {
	const v = secretData(objects, name)[key];
	if (v === undefined) throw new Error(`Secret ${name} has no key ${key}`);
	return v;
}

/** Kubernetes' `$(VAR)` expansion in env values, command and args: `$$` escapes, unknown names stay. */
export function expandRefs(text: string, env: Record<string, string>): string {
	return text.replace(/\$\$|\$\(([A-Za-z_][\w.-]*)\)/g, (m, name: string | undefined) =>
		name === undefined ? "$" : (env[name] ?? m)
	);
}

/**
 * The environment the kubelet would give a container: envFrom sources first, then env entries in order, each
 * value expanded against what is defined before it. References to missing ConfigMaps, Secrets or keys throw,
 * as they keep a real pod from starting.
 */
export function containerEnv(objects: K8sObject[], w: Workload, c: IContainer): Record<string, string> {
	const env: Record<string, string> = {};
	for (const from of c.envFrom ?? []) {
		const prefix = from.prefix ?? "";
		const source = from.configMapRef
			? ((find(objects, "ConfigMap", from.configMapRef.name!).data ?? {}) as Record<string, string>)
			: from.secretRef
				? secretData(objects, from.secretRef.name!)
				: null;
		if (!source) throw new Error(`${w.object.metadata.name}: unsupported envFrom ${JSON.stringify(from)}`);
		for (const [k, v] of Object.entries(source)) env[prefix + k] = v;
	}
	for (const e of c.env ?? []) {
		const vf = e.valueFrom;
		if (!vf) env[e.name] = expandRefs(e.value ?? "", env);
		else if (vf.secretKeyRef) env[e.name] = secretValue(objects, vf.secretKeyRef.name!, vf.secretKeyRef.key);
		else if (vf.configMapKeyRef) env[e.name] = configMapValue(objects, vf.configMapKeyRef.name!, vf.configMapKeyRef.key);
		else if (vf.fieldRef) env[e.name] = fieldValue(w, vf.fieldRef.fieldPath);
		else throw new Error(`${w.object.metadata.name}: unsupported valueFrom for ${e.name}`);
	}
	return env;
}

function fieldValue(w: Workload, fieldPath: string): string {
	if (fieldPath === "metadata.name") return w.podName;
	if (fieldPath === "metadata.namespace") return w.object.metadata.namespace ?? "default";
	const label = /^metadata\.labels\['(.+)'\]$/.exec(fieldPath);
	if (label) return w.podLabels[label[1]!] ?? "";
	throw new Error(`Unsupported fieldRef ${fieldPath}`);
}

/** The number a container port reference (a name or a number) stands for in container `c`. */
export function resolvePort(c: IContainer, port: string | number): number | undefined {
	if (typeof port === "number") return c.ports?.some(p => p.containerPort === port) ? port : undefined;
	if (/^\d+$/.test(port)) return resolvePort(c, Number(port));
	return c.ports?.find(p => p.name === port)?.containerPort;
}

export function selects(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
	return !!selector && Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/**
 * The directory of a mounted ConfigMap that holds `file` (e.g. nats-server's `--config`): the file's name in
 * it and every file beside it (includes).
 */
export function mountedFiles(objects: K8sObject[], w: Workload, c: IContainer, file: string): { name: string; files: Record<string, string> } {
	const mount = (c.volumeMounts ?? []).find(m => file.startsWith(m.mountPath + "/"));
	if (!mount) throw new Error(`${w.object.metadata.name}: nothing mounted at ${file}`);
	const volume = (w.pod.volumes ?? []).find(v => v.name === mount.name);
	if (!volume?.configMap) throw new Error(`${w.object.metadata.name}: ${file} is not from a ConfigMap`);
	const name = file.slice(mount.mountPath.length + 1);
	const files = (find(objects, "ConfigMap", volume.configMap.name!).data ?? {}) as Record<string, string>;
	if (files[name] === undefined) throw new Error(`ConfigMap ${volume.configMap.name} has no key ${name}`);
	return { name, files };
}

// --- nats-server configuration -------------------------------------------------------------------------

export type NatsValue = string | NatsConf | NatsValue[];
export interface NatsConf {
	[key: string]: NatsValue;
}

/**
 * A reader for the subset of the nats-server config format k8s/ uses (blocks, lists, `key: value` with
 * `:`/`=`/space separators, comments, `include` of a file beside it, read through `include`). Values stay
 * strings; `$NAME` references are left for the caller. The config's validity itself is checked by
 * nats-server (see nats-config.test.ts).
 */
export function parseNatsConf(text: string, include: (file: string) => string = f => {
	throw new Error(`include ${f}: no files given`);
}): NatsConf {
	const src = text.replace(/(^|[^\w"'])#.*$/gm, "$1");
	let i = 0;
	const skip = () => {
		while (i < src.length && /[\s,;]/.test(src[i]!)) i++;
	};
	const value = (): NatsValue => {
		skip();
		const c = src[i];
		if (c === "{") {
			i++;
			const obj = body("}");
			i++;
			return obj;
		}
		if (c === "[") {
			i++;
			const list: NatsValue[] = [];
			for (skip(); src[i] !== "]"; skip()) {
				if (i >= src.length) throw new Error("Unterminated list in nats config");
				list.push(value());
			}
			i++;
			return list;
		}
		if (c === '"' || c === "'") {
			const end = src.indexOf(c, i + 1);
			const s = src.slice(i + 1, end);
			i = end + 1;
			return s;
		}
		const m = /^[^\s,;}\]]+/.exec(src.slice(i));
		if (!m) throw new Error(`Unexpected '${c}' in nats config at ${i}`);
		i += m[0].length;
		return m[0];
	};
	const body = (close: string | null): NatsConf => {
		const obj: NatsConf = {};
		for (skip(); i < src.length && src[i] !== close; skip()) {
			const key = /^[\w.-]+/.exec(src.slice(i));
			if (!key) throw new Error(`Expected a key in nats config at ${i}: ${src.slice(i, i + 20)}`);
			i += key[0].length;
			while (src[i] === " " || src[i] === "\t") i++;
			if (src[i] === ":" || src[i] === "=") i++;
			const v = value();
			if (key[0] === "include" && typeof v === "string") Object.assign(obj, parseNatsConf(include(v), include));
			else obj[key[0]] = v;
		}
		return obj;
	};
	return body(null);
}

/** A config value with `$NAME` replaced from the server's environment (nats-server does the same). */
export function natsResolve(v: NatsValue | undefined, env: Record<string, string>): string | undefined {
	if (typeof v !== "string") return undefined;
	const m = /^\$(\w+)$/.exec(v);
	if (!m) return v;
	const value = env[m[1]!];
	if (value === undefined) throw new Error(`nats config references $${m[1]} but the container does not set it`);
	return value;
}

export function natsBlock(conf: NatsConf, key: string): NatsConf | undefined {
	const b = conf[key];
	return b && typeof b === "object" && !Array.isArray(b) ? b : undefined;
}

/** Ports a nats-server with this config listens on. */
export function natsPorts(conf: NatsConf): Record<"client" | "monitor" | "cluster" | "leafnodes", number | null> {
	const portOf = (block: NatsConf | undefined, fallback: number | null) => {
		if (!block) return fallback;
		const listen = block.listen;
		if (typeof listen === "string") return Number(listen.split(":").at(-1));
		return typeof block.port === "string" ? Number(block.port) : fallback;
	};
	const leaf = natsBlock(conf, "leafnodes");
	return {
		client: portOf(conf, 4222),
		monitor: typeof conf.http_port === "string" ? Number(conf.http_port) : null,
		cluster: portOf(natsBlock(conf, "cluster"), null),
		leafnodes: leaf && (leaf.listen !== undefined || leaf.port !== undefined) ? portOf(leaf, null) : null
	};
}

/**
 * Parses a size as nats-server, Go's GOMEMLIMIT and Kubernetes write them: a bare suffix is decimal (`8G`,
 * `256M`), an `i` or `B` makes it binary (`1Gi`, `900MiB`, `64MB`).
 */
export function bytes(size: string): number {
	const m = /^(\d+(?:\.\d+)?)([KMGT]?)(i?)(B?)$/i.exec(size.trim());
	if (!m) throw new Error(`Cannot parse size ${size}`);
	const exp = ["", "K", "M", "G", "T"].indexOf(m[2]!.toUpperCase());
	return Number(m[1]) * (m[3] || m[4] ? 1024 : 1000) ** exp;
}

// --- schema validation -----------------------------------------------------------------------------------

interface ModelClass {
	prototype: { validate(this: unknown): void };
}

/**
 * Validates one object against the OpenAPI schema of its kind (kubernetes-models, generated from Kubernetes
 * v1.36) and, like `kubectl apply --validate=strict`, also rejects fields the schema does not know: the
 * generated validators ignore unknown properties, so the object is validated through proxies that record
 * which properties the validator looked at; anything it never looked at is unknown to the schema. Maps
 * (labels, data, resources) are iterated by the validator and so count as fully known.
 * Returns the problems found (empty when valid).
 */
export async function schemaProblems(o: K8sObject): Promise<string[]> {
	let mod: Record<string, unknown>;
	try {
		mod = (await import(`kubernetes-models/${o.apiVersion}`)) as Record<string, unknown>;
	} catch {
		return [`no schema for apiVersion ${o.apiVersion}`];
	}
	const model = mod[o.kind] as ModelClass | undefined;
	if (!model) return [`no schema for ${o.apiVersion} ${o.kind}`];
	const seen = new Map<object, Set<string>>();
	const wrap = (v: unknown): unknown => {
		if (v === null || typeof v !== "object") return v;
		let keys = seen.get(v);
		if (!keys) seen.set(v, (keys = new Set()));
		const read = keys;
		return new Proxy(v, {
			get(t, p, r) {
				if (typeof p === "string") read.add(p);
				return wrap(Reflect.get(t, p, r));
			},
			has(t, p) {
				if (typeof p === "string") read.add(p);
				return Reflect.has(t, p);
			},
			ownKeys(t) {
				read.add("*");
				return Reflect.ownKeys(t);
			}
		});
	};
	// kustomize folds long base64 values over several lines; the API server's decoder (Go's base64) skips
	// newlines, the schema's `byte` format does not.
	if (o.kind === "Secret" && o.data) {
		const data = Object.fromEntries(Object.entries(o.data as Record<string, string>).map(([k, v]) => [k, v.replace(/\n/g, "")]));
		o = { ...o, data };
	}
	try {
		model.prototype.validate.call(wrap(o));
	} catch (err) {
		return [(err as Error).message];
	}
	const unknown: string[] = [];
	const walk = (v: unknown, at: string) => {
		if (v === null || typeof v !== "object") return;
		const read = seen.get(v);
		for (const [k, child] of Object.entries(v)) {
			if (!Array.isArray(v) && read && !read.has("*") && !read.has(k)) unknown.push(`unknown field ${at}/${k}`);
			else walk(child, `${at}/${k}`);
		}
	};
	walk(o, "");
	return unknown;
}
