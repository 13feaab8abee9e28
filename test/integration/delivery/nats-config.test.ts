import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { connect } from "nats";
import type { IContainer } from "kubernetes-models/v1/Container";
import { startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { freePort, manage, waitFor, type ManagedProcess } from "../../support/processes.ts";
import { TARGETS, containerEnv, mountedFiles, natsPorts, parseNatsConf, render, workloads, type K8sObject, type Workload } from "./kustomize.ts";

/**
 * The NATS configurations under k8s/ run by a real nats-server, with the environment the kubelet would give
 * each container (Secrets, ConfigMaps, $(VAR) expansion). The machine's nats-server is older than the
 * image's (Debian's 2.9 against nats:2.12), so the configs stay within what both accept.
 */

interface NatsContainer {
	w: Workload;
	c: IContainer;
	/** The config file nats-server is started with, and every file of its ConfigMap (includes). */
	name: string;
	files: Record<string, string>;
}

function natsContainers(objects: K8sObject[]): NatsContainer[] {
	return workloads(objects).flatMap(w =>
		w.pod.containers
			.filter(c => (c.image ?? "").startsWith("nats:"))
			.map(c => ({ w, c, ...mountedFiles(objects, w, c, c.args![c.args!.indexOf("--config") + 1]!) }))
	);
}

/** Writes a ConfigMap's files into a new directory, as its volume mount would; returns the main file's path. */
function writeFiles(dir: string, name: string, files: Record<string, string>): string {
	mkdirSync(dir, { recursive: true });
	for (const [file, text] of Object.entries(files)) writeFileSync(path.join(dir, file), text);
	return path.join(dir, name);
}

function checkConfig(file: string, env: Record<string, string>): Promise<{ code: number; output: string }> {
	return new Promise(resolve => {
		execFile("nats-server", ["-c", file, "-t"], { env: { PATH: process.env.PATH, ...env }, timeout: 10_000 }, (err, stdout, stderr) =>
			resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr })
		);
	});
}

const tmp = mkdtempSync(path.join(os.tmpdir(), "lattice-nats-conf-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

test("every NATS config in every overlay passes `nats-server -t` with its container's environment", async () => {
	let n = 0;
	for (const target of TARGETS) {
		const objects = render(target);
		for (const { w, c, name, files } of natsContainers(objects)) {
			const file = writeFiles(path.join(tmp, path.basename(target), w.object.metadata.name), name, files);
			const env = containerEnv(objects, w, c);
			const ok = await checkConfig(file, env);
			assert.equal(ok.code, 0, `${target} ${w.object.metadata.name}: ${ok.output}`);
			// Without the container's variables the same file is rejected: the check does read them.
			assert.notEqual((await checkConfig(file, {})).code, 0);
			n++;
		}
	}
	assert.ok(n >= 5);
});

/**
 * A rendered config made runnable on this machine: listen on loopback, on free ports instead of the
 * well-known ones (the shared NATS owns 4222), with JetStream and the pid file in a temporary directory.
 * Returns the path of the main file and the ports chosen.
 */
async function localConfig(nc: NatsContainer, dir: string): Promise<{ file: string; ports: Record<string, number> }> {
	const conf = parseNatsConf(nc.files[nc.name]!, f => nc.files[path.basename(f)]!);
	const ports: Record<string, number> = {};
	const files = { ...nc.files };
	for (const [key, port] of Object.entries(natsPorts(conf))) {
		if (port === null) continue;
		ports[key] = await freePort();
		for (const f of Object.keys(files)) files[f] = files[f]!.replace(new RegExp(`\\b${port}\\b`, "g"), String(ports[key]));
	}
	for (const f of Object.keys(files)) {
		files[f] = files[f]!
			.replaceAll("0.0.0.0", "127.0.0.1")
			.replace(/store_dir:.*$/m, `store_dir: "${dir}/jetstream"`)
			.replace(/pid_file:.*$/m, `pid_file: "${dir}/nats.pid"`);
	}
	return { file: writeFiles(dir, nc.name, files), ports };
}

/** nats-server with a config file and the container's environment; resolves once its monitor port answers. */
async function runNats(file: string, env: Record<string, string>, monitorPort: number): Promise<ManagedProcess> {
	const p = manage(spawn("nats-server", ["-c", file], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] }));
	await waitFor(
		async () => {
			if (!p.alive()) throw new Error(p.output.join(""));
			return (await fetch(`http://127.0.0.1:${monitorPort}/varz`)).ok;
		},
		10_000,
		`nats-server ${file}`
	);
	return p;
}

describe("an edge site on the hub, as k8s/overlays/edge deploys them", () => {
	const servers: ManagedProcess[] = [];
	const nodes: LatticeNode[] = [];
	after(async () => {
		await Promise.all(nodes.map(n => n.stop(5000)));
		await Promise.all(servers.map(s => s.kill()));
	});

	test("the leaf joins the hub with the Secrets' credentials, and the cloud gateway calls an edge service", async () => {
		const objects = render("k8s/overlays/edge");
		const all = natsContainers(objects);
		const hub = all.find(x => x.w.podLabels["app.kubernetes.io/component"] === "hub")!;
		const leaf = all.find(x => x.w.podLabels["app.kubernetes.io/component"] === "leaf")!;

		const hubConf = await localConfig(hub, mkdtempSync(path.join(tmp, "hub-")));
		// Sites dial the advertised address; in the cluster that is the `nats` Service, here loopback.
		const hubEnv = { ...containerEnv(objects, hub.w, hub.c), LEAF_ADVERTISE: `127.0.0.1:${hubConf.ports.leafnodes}` };
		servers.push(await runNats(hubConf.file, hubEnv, hubConf.ports.monitor!));

		const leafConf = await localConfig(leaf, mkdtempSync(path.join(tmp, "leaf-")));
		const leafContainer: IContainer = {
			...leaf.c,
			env: leaf.c.env!.map(e => (e.name === "HUB_ADDRESS" ? { name: e.name, value: `127.0.0.1:${hubConf.ports.leafnodes}` } : e))
		};
		const leafEnv = containerEnv(objects, leaf.w, leafContainer);
		servers.push(await runNats(leafConf.file, leafEnv, leafConf.ports.monitor!));
		await waitFor(
			async () => ((await (await fetch(`http://127.0.0.1:${hubConf.ports.monitor}/leafz`)).json()) as { leafnodes: number }).leafnodes === 1,
			15_000,
			"the leaf to connect to the hub"
		);

		// Clients must authenticate: the gateway's credentials work, a wrong password does not.
		const hubUrl = `nats://127.0.0.1:${hubConf.ports.client}`;
		const gwTemplate = workloads(objects).find(w => w.object.metadata.name === "lattice-gateway")!;
		const gwEnv = containerEnv(objects, gwTemplate, gwTemplate.pod.containers[0]!);
		const nc = await connect({ servers: hubUrl, user: gwEnv.LATTICE_NATS_USER, pass: gwEnv.LATTICE_NATS_PASSWORD, reconnect: false });
		await nc.close();
		await assert.rejects(connect({ servers: hubUrl, user: gwEnv.LATTICE_NATS_USER, pass: "wrong", reconnect: false }), /Authorization/i);

		const edgeTemplate = workloads(objects).find(w => w.podLabels["app.kubernetes.io/component"] === "edge")!;
		const edgeEnv = containerEnv(objects, edgeTemplate, edgeTemplate.pod.containers[0]!);
		const namespace = uniqueNamespace("edge");
		const own = (env: Record<string, string>) => {
			const { PORT: _p, LATTICE_OPS_PORT: _o, LATTICE_HOST: _h, NODEID: _n, SERVICES: _s, ...rest } = env;
			return { ...rest, NAMESPACE: namespace };
		};
		// Started without waiting inside startNode, so that a node that never gets ready is still stopped.
		const site = await startNode({
			nodeID: "site-products",
			services: edgeEnv.SERVICES!,
			env: { ...own(edgeEnv), TRANSPORTER: `nats://127.0.0.1:${leafConf.ports.client}` },
			waitReady: false
		});
		const cloud = await startNode({
			nodeID: "cloud-gateway",
			services: gwEnv.SERVICES!,
			gateway: true,
			// The cloud cache is not part of this test: the in-process level only.
			env: { ...own(gwEnv), TRANSPORTER: hubUrl, CACHER: "memory" },
			waitReady: false
		});
		nodes.push(site, cloud);
		for (const n of nodes) {
			await waitFor(() => n.ready(), 20_000, `${n.nodeID} ready`).catch(err => {
				throw new Error(`${(err as Error).message}\n${n.output.join("")}\n${servers.map(x => x.output.join("")).join("\n")}`);
			});
		}
		const body = await waitFor(
			async () => {
				const res = await fetch(`${cloud.gatewayUrl}/api/products`);
				return res.status === 200 && ((await res.json()) as { total: number });
			},
			20_000,
			"the cloud gateway to reach the edge catalog through the leaf"
		);
		assert.equal(body.total, 3);
	});
});
