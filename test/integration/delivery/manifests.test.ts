import { describe, test } from "node:test";
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IService } from "kubernetes-models/v1/Service";
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { IIngress } from "kubernetes-models/networking.k8s.io/v1/Ingress";
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IPodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IStatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { buildConfig, expandServices, presets } from "../../../moleculer.config.ts";
import { ROOT } from "../../support/processes.ts";
import { imageConfig, readDockerfile } from "./dockerfile.ts";
import {
	TARGETS,
	bytes,
	containerEnv,
	expandRefs,
	find,
	mountedFiles,
	natsBlock,
	natsPorts,
	natsResolve,
	parseNatsConf,
	render,
	resolvePort,
	schemaProblems,
	selects,
	workloads,
	type K8sObject,
	type NatsConf,
	type Target,
	type Workload
} from "./kustomize.ts";

/**
 * Offline checks of everything under k8s/: each overlay renders with `kubectl kustomize`, every object is
 * valid for Kubernetes 1.36, and the manifests agree with the code they deploy — environment variables the
 * config reads, ports the processes open, credentials on both ends of each connection, the image the
 * Dockerfile builds.
 *
 * These live with the image tests (test/integration/delivery) rather than in test/unit: they need an
 * external tool (kubectl), and they share the Dockerfile parser and the kubelet emulation with the tests
 * that start the image's command and the NATS servers from the rendered manifests.
 */

const IMAGE_LABEL = "io.lattice.image";
const packageVersion = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const imageName = imageConfig(readDockerfile(), {}).labels[IMAGE_LABEL];

/** Read by Node itself, not by the config. */
const NODE_VARS = ["NODE_OPTIONS"];
/** Variables moleculer-runner consumes itself, besides those the config reads. */
const RUNNER_VARS = ["TRANSPORTER", "CACHER", "NAMESPACE", "NODEID", "LOGLEVEL", "SERVICES", "SERVICEDIR", "NODE_ENV"];

/**
 * The variables Lattice reads given this environment: buildConfig runs on a proxy of it that records every
 * lookup (conditional ones included: LATTICE_NATS_PASSWORD is read when LATTICE_NATS_USER is set), plus the
 * runner's own. The MOL_* prefix is the runner's too and is allowed separately.
 */
function readsOf(env: Record<string, string>): { config: ReturnType<typeof buildConfig>; reads: Set<string> } {
	const reads = new Set(RUNNER_VARS);
	const recorder = new Proxy(env, {
		get(t, name, r) {
			if (typeof name === "string") reads.add(name);
			return Reflect.get(t, name, r);
		},
		ownKeys() {
			throw new Error("buildConfig enumerates the environment: the set of variables it reads cannot be recorded");
		}
	});
	return { config: buildConfig(recorder), reads };
}

/** Ports Kubernetes objects may point at, per kind of server. */
const SERVER_PORTS = { lattice: [3000, 3001], nats: [4222, 6222, 8222, 7422], redis: [6379] } as const;

function isLattice(c: IContainer): boolean {
	return (c.image ?? "").split(":")[0] === imageName;
}
function isNats(c: IContainer): boolean {
	return (c.image ?? "").startsWith("nats:");
}
function isRedis(c: IContainer): boolean {
	return (c.image ?? "").startsWith("redis:");
}

interface Rendered {
	objects: K8sObject[];
	workloads: Workload[];
	of<T>(kind: string): (T & K8sObject)[];
}

const cache = new Map<Target, Rendered>();
function rendered(target: Target): Rendered {
	let r = cache.get(target);
	if (!r) {
		const objects = render(target);
		r = {
			objects,
			workloads: workloads(objects),
			of: <T,>(kind: string) => objects.filter(o => o.kind === kind) as (T & K8sObject)[]
		};
		cache.set(target, r);
	}
	return r;
}

/** The service files a Lattice container loads: SERVICES as the config rewrites it, or the whole directory. */
function loadedServices(env: Record<string, string>): string[] {
	const expanded = expandServices(env.SERVICES, env.SERVICEDIR);
	if (expanded === undefined) {
		return readdirSync(path.join(ROOT, "services"))
			.filter(f => f.endsWith(".service.ts"))
			.map(f => `services/${f}`);
	}
	return expanded.split(",");
}

/** What a Lattice container's process does with its environment: settings, variables read, ports opened. */
function latticeProcess(env: Record<string, string>) {
	const { config, reads } = readsOf(env);
	const services = loadedServices(env);
	const ports = new Set([config.lattice.ops.port]);
	if (services.includes("services/api.service.ts")) ports.add(config.lattice.gateway.port);
	return { config, reads, services, ports };
}

interface NatsServer {
	conf: NatsConf;
	env: Record<string, string>;
	ports: Set<number>;
}

function natsServer(r: Rendered, w: Workload, c: IContainer): NatsServer {
	const args = c.args ?? [];
	const file = args[args.indexOf("--config") + 1];
	assert.ok(file, `${w.object.metadata.name}: nats-server runs without --config`);
	const { name, files } = mountedFiles(r.objects, w, c, file);
	const conf = parseNatsConf(files[name]!, include => {
		const text = files[path.posix.basename(include)];
		assert.ok(text !== undefined, `${w.object.metadata.name}: ${name} includes ${include}, which is not mounted beside it`);
		return text;
	});
	const ports = new Set(Object.values(natsPorts(conf)).filter((p): p is number => p !== null));
	return { conf, env: containerEnv(r.objects, w, c), ports };
}

/** The ports a container's process listens on, derived from its configuration, not from its manifest. */
function openedPorts(r: Rendered, w: Workload, c: IContainer): Set<number> {
	if (isLattice(c)) return latticeProcess(containerEnv(r.objects, w, c)).ports;
	if (isNats(c)) return natsServer(r, w, c).ports;
	if (isRedis(c)) {
		const args = c.args ?? [];
		const i = args.indexOf("--port");
		return new Set([i >= 0 ? Number(args[i + 1]) : 6379]);
	}
	throw new Error(`${w.object.metadata.name}: unknown image ${c.image}`);
}

function containers(w: Workload): IContainer[] {
	return [...(w.pod.initContainers ?? []), ...w.pod.containers];
}

/** The Service a `scheme://[user:pass@]host:port` URL reaches inside the namespace, and the pods behind it. */
function serviceBehind(r: Rendered, url: string) {
	const u = new URL(url);
	const service = r.of<IService>("Service").find(s => s.metadata.name === u.hostname);
	assert.ok(service, `${url}: no Service named ${u.hostname}`);
	const port = service.spec?.ports?.find(p => p.port === Number(u.port));
	assert.ok(port, `${url}: Service ${u.hostname} has no port ${u.port}`);
	const pods = r.workloads.filter(w => selects(service.spec?.selector, w.podLabels));
	assert.ok(pods.length > 0, `${url}: Service ${u.hostname} selects no pods`);
	const targets = pods.map(w => {
		const c = w.pod.containers.find(x => resolvePort(x, port.targetPort ?? port.port) !== undefined);
		assert.ok(c, `${url}: targetPort ${port.targetPort} is not a port of ${w.object.metadata.name}`);
		return { workload: w, container: c, port: resolvePort(c, port.targetPort ?? port.port)! };
	});
	return { url: u, service, targets };
}

function seconds(duration: string): number {
	const m = /^(\d+)(s|m)$/.exec(duration);
	assert.ok(m, `cannot read duration ${duration}`);
	return Number(m[1]) * (m[2] === "m" ? 60 : 1);
}

test("the variables the config reads are recorded from buildConfig itself", () => {
	// Guards the recording: if these vanish, every "variables nothing reads" check below would be hollow.
	const { reads } = readsOf({ NODE_ENV: "development", TRANSPORTER: "nats://127.0.0.1:4222", LATTICE_NATS_USER: "u", REDIS_PASSWORD: "x" });
	for (const name of ["PORT", "LATTICE_OPS_PORT", "LATTICE_NATS_PASSWORD", "LATTICE_ROLE", "DATABASE_URL", "NODEID", "LATTICE_CLUSTER_KEY"]) {
		assert.ok(reads.has(name), name);
	}
	assert.ok(!reads.has("REDIS_PASSWORD"));
	assert.equal(imageName, "ghcr.io/lattice/lattice", "the Dockerfile declares the image name in LABEL io.lattice.image");
});

for (const target of TARGETS) {
	describe(target, () => {
		test("renders offline and every object is valid for Kubernetes 1.36 (unknown fields rejected)", async () => {
			const r = rendered(target);
			assert.ok(r.objects.length > 0);
			const problems: string[] = [];
			for (const o of r.objects) {
				for (const p of await schemaProblems(o)) problems.push(`${o.kind}/${o.metadata.name}: ${p}`);
			}
			assert.deepEqual(problems, []);
			for (const o of r.objects) {
				if (o.kind !== "Namespace") assert.equal(o.metadata.namespace, "lattice", `${o.kind}/${o.metadata.name}`);
			}
		});

		test("every container has resources, probes, a pinned image and the restricted security profile", () => {
			const r = rendered(target);
			assert.ok(r.workloads.length > 0);
			for (const w of r.workloads) {
				const name = `${w.object.kind}/${w.object.metadata.name}`;
				const pod = w.pod;
				assert.equal(pod.automountServiceAccountToken, false, `${name}: no API token in the pod`);
				assert.equal(pod.enableServiceLinks, false, `${name}: no service-link variables in the environment`);
				assert.ok(!pod.hostNetwork && !pod.hostPID && !pod.hostIPC, name);
				assert.ok(!(pod.volumes ?? []).some(v => v.hostPath), `${name}: hostPath volume`);
				assert.equal(pod.securityContext?.runAsNonRoot, true, `${name}: runAsNonRoot`);
				assert.notEqual(pod.securityContext?.runAsUser, 0, name);
				assert.equal(pod.securityContext?.seccompProfile?.type, "RuntimeDefault", `${name}: seccomp`);
				for (const c of containers(w)) {
					const at = `${name} container ${c.name}`;
					assert.match(c.image ?? "", /^[^:@]+(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$/, `${at}: image has a tag`);
					assert.doesNotMatch(c.image ?? "", /:latest$/, at);
					assert.ok(c.resources?.requests?.cpu, `${at}: cpu request`);
					assert.ok(c.resources?.requests?.memory, `${at}: memory request`);
					assert.ok(c.resources?.limits?.memory, `${at}: memory limit`);
					assert.ok(c.livenessProbe, `${at}: liveness probe`);
					assert.ok(c.readinessProbe, `${at}: readiness probe`);
					const sc = c.securityContext;
					assert.equal(sc?.allowPrivilegeEscalation, false, `${at}: allowPrivilegeEscalation`);
					assert.equal(sc?.readOnlyRootFilesystem, true, `${at}: readOnlyRootFilesystem`);
					assert.ok(sc?.capabilities?.drop?.includes("ALL"), `${at}: drops ALL capabilities`);
					assert.ok(!sc?.capabilities?.add?.length && !sc?.privileged, at);
				}
			}
		});

		test("containers declare exactly the ports their processes open, and probes hit them", () => {
			const r = rendered(target);
			for (const w of r.workloads) {
				for (const c of containers(w)) {
					const at = `${w.object.metadata.name}/${c.name}`;
					const declared = new Set((c.ports ?? []).map(p => p.containerPort));
					const opened = openedPorts(r, w, c);
					assert.deepEqual([...declared].sort(), [...opened].sort(), `${at}: declared vs opened ports`);
					const allowed: readonly number[] = isLattice(c) ? SERVER_PORTS.lattice : isNats(c) ? SERVER_PORTS.nats : SERVER_PORTS.redis;
					for (const p of opened) assert.ok(allowed.includes(p), `${at}: unexpected port ${p}`);
					for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
						const port = probe?.httpGet?.port ?? probe?.tcpSocket?.port;
						if (port !== undefined) assert.ok(opened.has(resolvePort(c, port) ?? -1), `${at}: probe port ${port}`);
					}
				}
			}
		});

		test("Lattice containers: the env the config reads, the image the Dockerfile builds, probes and shutdown", () => {
			const r = rendered(target);
			const lattice = r.workloads.filter(w => w.pod.containers.some(isLattice));
			assert.ok(lattice.length > 0);
			for (const w of lattice) {
				for (const c of w.pod.containers.filter(isLattice)) {
					const at = `${w.object.metadata.name}/${c.name}`;
					assert.equal(c.image, `${imageName}:${packageVersion}`, `${at}: image`);
					const env = containerEnv(r.objects, w, c);
					// The config accepts every value (ranges, enums, URL schemes, keys) and the services exist.
					const proc = latticeProcess(env);
					const unread = Object.keys(env).filter(k => !proc.reads.has(k) && !k.startsWith("MOL_") && !NODE_VARS.includes(k));
					assert.deepEqual(unread, [], `${at}: variables nothing reads`);
					assert.equal(env.NODE_ENV, "production", at);
					// Node refuses to start with a flag NODE_OPTIONS may not carry.
					if (env.NODE_OPTIONS) execFileSync(process.execPath, ["-e", ""], { env: { NODE_OPTIONS: env.NODE_OPTIONS }, stdio: "pipe" });
					for (const f of proc.services) assert.ok(existsSync(path.join(ROOT, f)), `${at}: SERVICES names ${f}`);
					const ops = proc.config.lattice.ops.port;
					assert.equal(resolvePort(c, "ops"), ops, `${at}: the ops port is named "ops" (Prometheus keeps that name)`);
					assert.equal(c.livenessProbe?.httpGet?.path, "/live", at);
					assert.equal(c.readinessProbe?.httpGet?.path, "/ready", at);
					assert.equal(resolvePort(c, c.livenessProbe!.httpGet!.port), ops, at);
					assert.equal(resolvePort(c, c.readinessProbe!.httpGet!.port), ops, at);
					if (proc.ports.has(proc.config.lattice.gateway.port)) {
						assert.equal(resolvePort(c, "http"), proc.config.lattice.gateway.port, `${at}: the gateway port is named "http"`);
					}
					// Routing stops (preStop sleep) before SIGTERM; then in-flight requests drain.
					const sleep = c.lifecycle?.preStop?.sleep?.seconds;
					assert.ok(sleep && sleep >= 3, `${at}: preStop sleep`);
					const needed = sleep + presets.tracking.shutdownTimeout / 1000 + 5;
					assert.ok((w.pod.terminationGracePeriodSeconds ?? 30) >= needed, `${at}: grace period < ${needed} s`);
					const ann = (w.object.spec as { template: { metadata: { annotations?: Record<string, string> } } }).template.metadata.annotations ?? {};
					assert.equal(ann["prometheus.io/scrape"], "true", at);
					assert.equal(ann["prometheus.io/port"], String(ops), at);
					assert.equal(ann["prometheus.io/path"], "/metrics", at);
					assert.ok(c.volumeMounts?.some(m => m.mountPath === "/tmp"), `${at}: writable /tmp on a read-only root`);
				}
			}
		});

		test("connections resolve to Services and both ends hold the same credentials", () => {
			const r = rendered(target);
			// One Moleculer namespace and one cluster key: every node must open every other node's packets.
			const shared = new Set(
				r.workloads.flatMap(w =>
					w.pod.containers.filter(isLattice).map(c => {
						const env = containerEnv(r.objects, w, c);
						return `${env.NAMESPACE}|${env.LATTICE_CLUSTER_KEY}`;
					})
				)
			);
			assert.equal(shared.size, 1, `namespace|cluster key differ between Lattice pods: ${[...shared].join(", ")}`);
			let checked = 0;
			for (const w of r.workloads) {
				for (const c of w.pod.containers) {
					const env = containerEnv(r.objects, w, c);
					const at = `${w.object.metadata.name}/${c.name}`;
					if (isLattice(c) && env.TRANSPORTER) {
						const { targets } = serviceBehind(r, env.TRANSPORTER);
						for (const t of targets) {
							assert.ok(isNats(t.container), `${at}: TRANSPORTER reaches ${t.workload.object.metadata.name}`);
							const server = natsServer(r, t.workload, t.container);
							assert.equal(t.port, natsPorts(server.conf).client, `${at}: TRANSPORTER reaches the client port`);
							const auth = natsBlock(server.conf, "authorization");
							assert.ok(auth, `${t.workload.object.metadata.name}: clients must authenticate`);
							assert.equal(env.LATTICE_NATS_USER, natsResolve(auth.user, server.env), `${at}: NATS user`);
							assert.equal(env.LATTICE_NATS_PASSWORD, natsResolve(auth.password, server.env), `${at}: NATS password`);
							checked++;
						}
					}
					if (isLattice(c) && /^rediss?:/.test(env.CACHER ?? "")) {
						const { url, targets } = serviceBehind(r, env.CACHER!);
						for (const t of targets) {
							assert.ok(isRedis(t.container), at);
							const args = (t.container.args ?? []).map(a => expandRefs(a, containerEnv(r.objects, t.workload, t.container)));
							const pass = args[args.indexOf("--requirepass") + 1];
							assert.ok(args.includes("--requirepass") && pass, "Redis requires a password");
							assert.equal(decodeURIComponent(url.password), pass, `${at}: Redis password`);
							checked++;
						}
					}
					if (isNats(c) && env.HUB_URL) {
						const { url, targets } = serviceBehind(r, env.HUB_URL);
						assert.equal(url.protocol, "nats-leaf:");
						const conf = natsServer(r, w, c).conf;
						const remotes = natsBlock(conf, "leafnodes")?.remotes;
						assert.ok(Array.isArray(remotes) && remotes.some(x => typeof x === "object" && !Array.isArray(x) && x.url === "$HUB_URL"), `${at}: remote uses HUB_URL`);
						for (const t of targets) {
							const hub = natsServer(r, t.workload, t.container);
							assert.equal(t.port, natsPorts(hub.conf).leafnodes, `${at}: HUB_URL reaches the hub's leafnode port`);
							const advertised = natsResolve(natsBlock(hub.conf, "leafnodes")!.advertise, hub.env);
							if (advertised) assert.equal(`${url.hostname}:${url.port}`, advertised, `${at}: dials the address the hub advertises`);
							const auth = natsBlock(natsBlock(hub.conf, "leafnodes")!, "authorization");
							assert.ok(auth, "the hub's leafnode port requires authentication");
							assert.equal(decodeURIComponent(url.username), natsResolve(auth.user, hub.env), `${at}: leafnode user`);
							assert.equal(decodeURIComponent(url.password), natsResolve(auth.password, hub.env), `${at}: leafnode password`);
							checked++;
						}
					}
				}
			}
			assert.ok(checked > 0);
		});

		test("NATS servers: cluster routes match replicas, limits fit resources and volumes, lame duck fits the grace period", () => {
			const r = rendered(target);
			const servers = r.workloads.filter(w => w.pod.containers.some(isNats));
			assert.ok(servers.length > 0);
			for (const w of servers) {
				const sts = w.object as IStatefulSet & K8sObject;
				assert.equal(sts.kind, "StatefulSet", "NATS keeps its JetStream store on a PVC");
				const c = w.pod.containers.find(isNats)!;
				const { conf, env } = natsServer(r, w, c);
				const at = sts.metadata.name;
				const replicas = w.replicas ?? 1;
				const cluster = natsBlock(conf, "cluster");
				const headless = r.of<IService>("Service").find(s => s.metadata.name === sts.spec?.serviceName);
				assert.ok(headless, `${at}: governing Service ${sts.spec?.serviceName}`);
				assert.ok(selects(headless.spec?.selector, w.podLabels), at);
				if (replicas > 1) {
					assert.ok(cluster, `${at}: ${replicas} replicas need a cluster block`);
					assert.equal(headless.spec?.clusterIP, "None", `${at}: routes need per-pod DNS names`);
					assert.equal(headless.spec?.publishNotReadyAddresses, true, `${at}: peers must find each other before ready`);
					const port = natsPorts(conf).cluster;
					const expected = Array.from({ length: replicas }, (_v, i) => `nats://${at}-${i}.${headless.metadata.name}:${port}`);
					assert.deepEqual(cluster.routes, expected, `${at}: routes`);
				} else {
					assert.equal(cluster, undefined, `${at}: a single server must not wait for cluster peers`);
				}
				const js = natsBlock(conf, "jetstream");
				assert.ok(js, `${at}: JetStream enabled`);
				assert.ok(natsResolve(js.domain, env), `${at}: JetStream domain`);
				const storeDir = natsResolve(js.store_dir, env)!;
				const mount = c.volumeMounts?.find(m => storeDir.startsWith(m.mountPath + "/") || storeDir === m.mountPath);
				const claim = sts.spec?.volumeClaimTemplates?.find(t => t.metadata?.name === mount?.name);
				assert.ok(claim, `${at}: ${storeDir} is on a PersistentVolumeClaim`);
				const storage = bytes(String(claim.spec?.resources?.requests?.storage));
				assert.ok(bytes(natsResolve(js.max_file_store, env)!) < storage, `${at}: max_file_store fits the volume`);
				const limit = bytes(String(c.resources?.limits?.memory));
				assert.ok(bytes(natsResolve(js.max_memory_store, env)!) < limit / 2, `${at}: max_memory_store leaves room`);
				assert.ok(env.GOMEMLIMIT && bytes(env.GOMEMLIMIT) < limit, `${at}: GOMEMLIMIT below the memory limit`);
				const lameDuck = seconds(natsResolve(conf.lame_duck_duration, env)!) + seconds(natsResolve(conf.lame_duck_grace_period, env)!);
				assert.ok((w.pod.terminationGracePeriodSeconds ?? 30) > lameDuck, `${at}: lame duck mode outlasts the grace period`);
				assert.deepEqual(c.lifecycle?.preStop?.exec?.command, ["nats-server", "--signal", `ldm=${natsResolve(conf.pid_file, env)}`], at);
			}
		});

		test("Services, Ingress, autoscalers and disruption budgets point at real pods and ports", () => {
			const r = rendered(target);
			for (const s of r.of<IService>("Service")) {
				const pods = r.workloads.filter(w => selects(s.spec?.selector, w.podLabels));
				assert.ok(pods.length > 0, `Service ${s.metadata.name} selects no pods`);
				for (const p of s.spec?.ports ?? []) {
					for (const w of pods) {
						const hit = w.pod.containers.map(c => ({ c, n: resolvePort(c, p.targetPort ?? p.port) })).find(x => x.n !== undefined);
						assert.ok(hit, `Service ${s.metadata.name} port ${p.name}: no such port on ${w.object.metadata.name}`);
						assert.ok(openedPorts(r, w, hit.c).has(hit.n!), `Service ${s.metadata.name}: ${hit.n} is not opened`);
					}
				}
			}
			for (const ing of r.of<IIngress>("Ingress")) {
				for (const rule of ing.spec?.rules ?? []) {
					for (const p of rule.http?.paths ?? []) {
						const backend = p.backend.service!;
						const svc = find(r.objects, "Service", backend.name) as IService & K8sObject;
						const port = svc.spec?.ports?.find(x => (backend.port?.name ? x.name === backend.port.name : x.port === backend.port?.number));
						assert.ok(port, `Ingress ${ing.metadata.name}: Service ${backend.name} has no port ${JSON.stringify(backend.port)}`);
						const pods = r.workloads.filter(w => selects(svc.spec?.selector, w.podLabels));
						for (const w of pods) {
							const c = w.pod.containers.find(isLattice);
							assert.ok(c, "the Ingress routes to Lattice pods only");
							const proc = latticeProcess(containerEnv(r.objects, w, c));
							assert.ok(proc.services.includes("services/api.service.ts"), `Ingress reaches ${w.object.metadata.name}, which runs no gateway`);
							assert.equal(resolvePort(c, port.targetPort ?? port.port), proc.config.lattice.gateway.port);
						}
					}
				}
			}
			for (const hpa of r.of<IHorizontalPodAutoscaler>("HorizontalPodAutoscaler")) {
				const ref = hpa.spec!.scaleTargetRef;
				const w = r.workloads.find(x => x.object.kind === ref.kind && x.object.metadata.name === ref.name);
				assert.ok(w, `HPA ${hpa.metadata.name} scales nothing`);
				assert.equal(w.replicas, undefined, `${ref.name}: replicas is owned by the HPA`);
				assert.ok((hpa.spec!.minReplicas ?? 1) <= hpa.spec!.maxReplicas);
				assert.ok((hpa.spec!.minReplicas ?? 1) >= 2, `${ref.name}: the HPA keeps at least two pods`);
			}
			for (const pdb of r.of<IPodDisruptionBudget>("PodDisruptionBudget")) {
				const sel = pdb.spec?.selector?.matchLabels;
				assert.ok(r.workloads.some(w => selects(sel, w.podLabels)), `PDB ${pdb.metadata.name} selects no pods`);
				assert.ok(pdb.spec?.maxUnavailable !== undefined, `PDB ${pdb.metadata.name}: maxUnavailable never blocks a drain`);
			}
		});

		test("network policies: default deny, only the gateway is open to all, NATS and Redis accept Lattice pods only", () => {
			const r = rendered(target);
			const policies = r.of<INetworkPolicy>("NetworkPolicy");
			assert.ok(
				policies.some(p => Object.keys(p.spec?.podSelector ?? {}).length === 0 && p.spec?.policyTypes?.includes("Ingress") && !p.spec.ingress),
				"a default-deny ingress policy"
			);
			const openToAll = new Set<string>();
			for (const p of policies) {
				const sel = p.spec?.podSelector?.matchLabels;
				const pods = sel ? r.workloads.filter(w => selects(sel, w.podLabels)) : r.workloads;
				assert.ok(pods.length > 0, `NetworkPolicy ${p.metadata.name} selects no pods`);
				for (const rule of p.spec?.ingress ?? []) {
					for (const w of pods) {
						const ports = (rule.ports ?? []).map(x => {
							const n = w.pod.containers.map(c => resolvePort(c, x.port!)).find(v => v !== undefined);
							assert.ok(n, `NetworkPolicy ${p.metadata.name}: port ${x.port} is not on ${w.object.metadata.name}`);
							return n;
						});
						assert.ok(ports.length > 0, `NetworkPolicy ${p.metadata.name}: a rule without ports opens every port`);
						const component = `${w.podLabels["app.kubernetes.io/name"]}/${w.podLabels["app.kubernetes.io/component"]}`;
						if (!rule.from?.length) for (const n of ports) openToAll.add(`${component}:${n}`);
						const server = w.podLabels["app.kubernetes.io/name"];
						if (server !== "nats" && server !== "redis") continue;
						const clientPorts = [natsPortsOf(r, w).client, 6379];
						for (const n of ports.filter(x => clientPorts.includes(x))) {
							for (const from of rule.from ?? []) {
								assert.ok(!from.ipBlock && !from.namespaceSelector, `${p.metadata.name}: ${server} client port open beyond the namespace`);
								assert.equal(from.podSelector?.matchLabels?.["app.kubernetes.io/name"], "lattice", `${p.metadata.name}: ${server}:${n} from non-Lattice pods`);
							}
							assert.ok(rule.from?.length, `${p.metadata.name}: ${server}:${n} open to all`);
						}
					}
				}
			}
			const expected = ["lattice/gateway:3000"];
			if (target === "k8s/overlays/edge") expected.push("nats/hub:7422");
			assert.deepEqual([...openToAll].sort(), expected.sort());
		});

		test("Prometheus scrape config keeps the ops port of Lattice pods", () => {
			const r = rendered(target);
			const cm = find(r.objects, "ConfigMap", "lattice-prometheus-scrape");
			const scrape = parseYaml((cm.data as Record<string, string>)["lattice.yaml"]!) as {
				scrape_configs: {
					metrics_path: string;
					kubernetes_sd_configs: { role: string; selectors?: { role: string; label: string }[] }[];
					relabel_configs: { source_labels?: string[]; regex?: string; action?: string }[];
				}[];
			};
			const job = scrape.scrape_configs[0]!;
			assert.equal(job.metrics_path, "/metrics");
			assert.equal(job.kubernetes_sd_configs[0]!.role, "pod");
			const [key, value] = job.kubernetes_sd_configs[0]!.selectors![0]!.label.split("=");
			const keep = job.relabel_configs.find(x => x.action === "keep" && x.source_labels?.[0] === "__meta_kubernetes_pod_container_port_name");
			assert.ok(keep?.regex);
			const keeps = new RegExp(`^(?:${keep.regex})$`);
			const lattice = r.workloads.filter(w => w.pod.containers.some(isLattice));
			for (const w of lattice) {
				assert.equal(w.podLabels[key!], value, `${w.object.metadata.name} is discovered`);
				const kept = w.pod.containers.flatMap(c => c.ports ?? []).filter(p => keeps.test(p.name ?? ""));
				assert.deepEqual(kept.map(p => p.containerPort), [latticeProcess(containerEnv(r.objects, w, w.pod.containers.find(isLattice)!)).config.lattice.ops.port]);
			}
		});
	});
}

function natsPortsOf(r: Rendered, w: Workload) {
	const c = w.pod.containers.find(isNats);
	return c ? natsPorts(natsServer(r, w, c).conf) : { client: -1 };
}

describe("overlay specifics", () => {
	test("dev: one pod runs every service, one NATS server, no autoscaling", () => {
		const r = rendered("k8s/overlays/dev");
		const lattice = r.workloads.filter(w => w.pod.containers.some(isLattice));
		assert.equal(lattice.length, 1);
		const w = lattice[0]!;
		assert.equal(w.replicas, 1);
		const env = containerEnv(r.objects, w, w.pod.containers.find(isLattice)!);
		assert.equal(env.SERVICES, undefined, "the image's default: the whole services directory");
		const everyService = readdirSync(path.join(ROOT, "services"))
			.filter(f => f.endsWith(".service.ts"))
			.map(f => `services/${f}`)
			.sort();
		assert.deepEqual(latticeProcess(env).services.sort(), everyService);
		assert.equal(r.of("HorizontalPodAutoscaler").length, 0);
		const nats = r.workloads.find(x => x.object.metadata.name === "nats")!;
		assert.equal(nats.replicas, 1);
	});

	test("base and prod: a three-server NATS cluster, and gateway and catalog roles split by SERVICES", () => {
		for (const target of ["k8s/base", "k8s/overlays/prod"] as const) {
			const r = rendered(target);
			assert.equal(r.workloads.find(x => x.object.metadata.name === "nats")!.replicas, 3, target);
			const roles = Object.fromEntries(
				r.workloads
					.filter(w => w.pod.containers.some(isLattice))
					.map(w => [w.podLabels["app.kubernetes.io/component"], containerEnv(r.objects, w, w.pod.containers.find(isLattice)!).SERVICES])
			);
			assert.deepEqual(roles, { gateway: "api,auth", catalog: "products,inventory,payments,orders" }, target);
		}
	});

	test("base and prod ship the Grafana dashboard where a dashboard sidecar finds it", () => {
		for (const target of ["k8s/base", "k8s/overlays/prod"] as const) {
			const maps = rendered(target).of<{ metadata: { name: string; namespace?: string; labels?: Record<string, string> }; data?: Record<string, string> }>(
				"ConfigMap"
			);
			const dashboard = maps.find(m => m.metadata.labels?.grafana_dashboard === "1");
			assert.ok(dashboard, `${target}: no ConfigMap labelled grafana_dashboard=1`);
			assert.equal(dashboard.metadata.namespace, "lattice", target);
			const json = JSON.parse(dashboard.data?.["lattice.json"] ?? "null") as { panels?: unknown[] } | null;
			assert.ok((json?.panels?.length ?? 0) > 0, `${target}: the dashboard has no panels`);
		}
	});

	test("prod: three replicas at least, CPU limits, memory request equal to its limit, one NATS server per node", () => {
		const r = rendered("k8s/overlays/prod");
		for (const hpa of r.of<IHorizontalPodAutoscaler>("HorizontalPodAutoscaler")) assert.ok((hpa.spec?.minReplicas ?? 1) >= 3, hpa.metadata.name);
		for (const w of r.workloads) {
			for (const c of w.pod.containers) {
				const at = `${w.object.metadata.name}/${c.name}`;
				assert.ok(c.resources?.limits?.cpu, `${at}: cpu limit`);
				assert.equal(c.resources?.requests?.memory, c.resources?.limits?.memory, `${at}: memory request = limit`);
			}
			const spread = w.pod.topologySpreadConstraints ?? [];
			if (w.pod.containers.some(c => isLattice(c) || isNats(c))) {
				assert.ok(spread.some(s => s.topologyKey === "kubernetes.io/hostname" && s.whenUnsatisfiable === "DoNotSchedule"), w.object.metadata.name);
			}
		}
	});

	test("edge: each site has a leaf NATS and Lattice pods pinned to its edge nodes, with its own JetStream domain", () => {
		const r = rendered("k8s/overlays/edge");
		const site = r.workloads.filter(w => w.podLabels["lattice.io/site"]);
		assert.ok(site.length >= 2);
		const leafs = site.filter(w => w.pod.containers.some(isNats));
		const edge = site.filter(w => w.pod.containers.some(isLattice));
		assert.ok(leafs.length > 0 && edge.length > 0);
		for (const w of site) {
			const at = w.object.metadata.name;
			const name = w.podLabels["lattice.io/site"]!;
			assert.equal(w.pod.nodeSelector?.["lattice.io/site"], name, `${at}: pinned to its site's nodes`);
			assert.equal(w.pod.nodeSelector?.["node-role.kubernetes.io/edge"], "", `${at}: edge nodes only`);
			const tolerated = (key: string, effect: string) => w.pod.tolerations?.some(t => t.key === key && t.effect === effect && t.operator === "Exists");
			assert.ok(tolerated("node-role.kubernetes.io/edge", "NoSchedule"), `${at}: tolerates the edge taint`);
			assert.ok(tolerated("node.kubernetes.io/unreachable", "NoExecute"), `${at}: stays when the node loses the control plane`);
			for (const c of w.pod.containers) {
				assert.ok(bytes(String(c.resources?.requests?.memory)) <= 128 * 2 ** 20, `${at}: small memory request`);
				assert.ok(/^\d+m$/.test(String(c.resources?.requests?.cpu)) && parseInt(String(c.resources?.requests?.cpu)) <= 50, `${at}: small cpu request`);
			}
			if (w.pod.containers.some(isLattice)) {
				const env = containerEnv(r.objects, w, w.pod.containers.find(isLattice)!);
				assert.equal(env.LATTICE_ROLE, "edge", at);
				assert.equal(env.LATTICE_SITE, name, at);
				const { targets } = serviceBehind(r, env.TRANSPORTER!);
				for (const t of targets) assert.equal(t.workload.podLabels["lattice.io/site"], name, `${at}: talks to its own site's leaf`);
				assert.ok(!env.DATABASE_URL && !/^redis/.test(env.CACHER ?? ""), `${at}: no cloud database or cache credentials at the edge`);
			}
		}
		for (const w of leafs) {
			const server = natsServer(r, w, w.pod.containers.find(isNats)!);
			assert.equal(natsResolve(natsBlock(server.conf, "jetstream")!.domain, server.env), w.podLabels["lattice.io/site"]);
		}
		const exposed = r.of<IService>("Service").filter(s => s.spec?.type === "LoadBalancer");
		assert.deepEqual(exposed.flatMap(s => (s.spec?.ports ?? []).map(p => `${s.metadata.name}:${p.port}`)), ["nats-leafnodes:7422"]);
	});
});
