import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Context, Errors, ServiceBroker, ServiceSchema } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { hashPassword } from "../../../lib/password.ts";
import { ADMIN, asUser, bearer, READER } from "../../support/auth.ts";
import { createBroker, NATS_URL, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";

/**
 * Authorization on every hop, across processes over NATS: a gateway process (api, auth), a provider process
 * (products and the vault fixture), and this test process as a third node with two client services. The checks
 * that matter happen on the provider, where the actions live.
 */

const namespace = uniqueNamespace("authz");
const suffix = namespace.slice(-6);
const env = { TRANSPORTER: NATS_URL, NAMESPACE: namespace };

/** Calls vault.secret with its own identity; vault grants it by name. */
const Auditor: ServiceSchema = {
	name: "auditor",
	actions: { read: { public: true, handler: (ctx: Context) => ctx.call("vault.secret") } }
};

/** Same calls, no grant. */
const Intruder: ServiceSchema = {
	name: "intruder",
	actions: {
		secret: { public: true, handler: (ctx: Context) => ctx.call("vault.secret") },
		open: { public: true, handler: (ctx: Context) => ctx.call("vault.open") },
		write: { public: true, handler: (ctx: Context) => ctx.call("products.create", { name: "Intruder", price: 1 }) }
	}
};

function refusedWith(code: 401 | 403) {
	return (e: Errors.MoleculerError) => {
		assert.equal(e.code, code);
		assert.equal(e.type, code === 401 ? ErrorType.UNAUTHORIZED : ErrorType.FORBIDDEN);
		return true;
	};
}

describe("authorization across gateway, provider and client processes", () => {
	let gateway: LatticeNode;
	let provider: LatticeNode;
	let client: ServiceBroker;
	let api: string;

	before(async () => {
		const fast = { ln: 10, r: 8, p: 1 };
		const users = [
			{ username: "editor", passwordHash: await hashPassword("editor-pw", fast), permissions: ["products:write"] },
			{ username: "viewer", passwordHash: await hashPassword("viewer-pw", fast) }
		];
		[gateway, provider] = await Promise.all([
			startNode({ nodeID: `gw-${suffix}`, services: "api,auth", gateway: true, env: { ...env, LATTICE_USERS: JSON.stringify(users) } }),
			startNode({ nodeID: `prov-${suffix}`, services: "products,test/support/fixtures/vault.service.ts", env })
		]);
		client = await createBroker({ ...env, NODEID: `client-${suffix}`, LOGLEVEL: "error" }, [Auditor, Intruder]);
		api = `${gateway.gatewayUrl}/api`;
		await waitFor(async () => (await fetch(`${api}/products`)).status === 200, 10_000, "gateway to reach products");
		await waitFor(() => client.registry.getServiceList({}).some(s => s.name === "vault"), 10_000, "client to discover vault");
	});

	after(async () => {
		await client?.stop();
		await Promise.allSettled([gateway?.stop(), provider?.stop()]);
	});

	async function login(username: string, password: string): Promise<string> {
		const res = await fetch(`${api}/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password }) });
		assert.equal(res.status, 200);
		return ((await res.json()) as { accessToken: string }).accessToken;
	}

	test("over HTTP: reads public, writes 401 anonymous, 403 without the permission, 200 with it", async () => {
		const body = JSON.stringify({ name: "Dripper", price: 22 });
		const post = (headers: Record<string, string> = {}) => fetch(`${api}/products`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
		assert.equal((await fetch(`${api}/products`)).status, 200);
		const anon = await post();
		assert.equal(anon.status, 401);
		assert.equal(((await anon.json()) as { type: string }).type, ErrorType.UNAUTHORIZED);
		const viewer = await post(bearer(await login("viewer", "viewer-pw")));
		assert.equal(viewer.status, 403);
		assert.equal(((await viewer.json()) as { type: string }).type, ErrorType.FORBIDDEN);
		const editor = await post(bearer(await login("editor", "editor-pw")));
		assert.equal(editor.status, 200);
		assert.equal(((await editor.json()) as { name: string }).name, "Dripper");
	});

	test("the provider enforces it too: a user without the permission is refused when calling from another node", async () => {
		await assert.rejects(client.call("products.create", { name: "x", price: 1 }, asUser(READER)), refusedWith(403));
		await assert.rejects(client.call("products.create", { name: "x", price: 1 }), refusedWith(401));
		const made = await client.call<{ name: string }, object>("products.create", { name: "By admin", price: 2 }, asUser(ADMIN));
		assert.equal(made.name, "By admin");
	});

	test("service to service across processes: granted by name, refused otherwise, undeclared open to services", async () => {
		assert.deepEqual(await client.call("auditor.read"), { action: "secret", node: provider.nodeID });
		await assert.rejects(client.call("intruder.secret"), refusedWith(403));
		await assert.rejects(client.call("intruder.write"), refusedWith(403), "no grant and no user: no products:write");
		assert.deepEqual(await client.call("intruder.open"), { action: "open", node: provider.nodeID });
	});

	test("users and anonymous callers across processes", async () => {
		await assert.rejects(client.call("vault.open"), refusedWith(401));
		await assert.rejects(client.call("vault.open", {}, { meta: { user: null } }), refusedWith(401));
		await assert.rejects(client.call("intruder.open", {}, { meta: { user: null } }), refusedWith(401), "anonymous stays anonymous through a service");
		assert.deepEqual(await client.call("vault.pub"), { action: "pub", node: provider.nodeID });
		assert.deepEqual(await client.call("vault.open", {}, asUser(READER)), { action: "open", node: provider.nodeID });
		await assert.rejects(client.call("vault.secret", {}, asUser(READER)), refusedWith(403));
		const reader = { ...READER, permissions: ["vault:read"] };
		assert.deepEqual(await client.call("vault.secret", {}, asUser(reader)), { action: "secret", node: provider.nodeID });
	});
});
