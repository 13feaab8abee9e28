import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { Context, Errors, ServiceBroker, ServiceSchema } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { ADMIN, asUser, READER } from "../../support/auth.ts";
import { createBroker } from "../../support/cluster.ts";

let handled = 0;

const Vault: ServiceSchema = {
	name: "vault",
	actions: {
		open: () => "open",
		pub: { public: true, handler: () => "pub" },
		secret: { permissions: ["vault:read"], services: ["auditor"], handler: () => "secret" },
		admin: { roles: ["admin"], handler: () => "admin" },
		cached: {
			permissions: ["vault:read"],
			cache: { keys: ["id"] },
			params: { id: "string" },
			handler(ctx: Context<{ id: string }>) {
				handled++;
				return `cached ${ctx.params.id}`;
			}
		},
		/** Public entry that reaches its own permissioned action: a service may always call itself. */
		viaSelf: { public: true, handler: (ctx: Context) => ctx.call("vault.secret") }
	}
};

/** Calls vault with its own identity (no user in meta): granted by name on `secret`. */
const Auditor: ServiceSchema = {
	name: "auditor",
	actions: {
		read: { public: true, handler: (ctx: Context) => ctx.call("vault.secret") }
	}
};

const Intruder: ServiceSchema = {
	name: "intruder",
	actions: {
		secret: { public: true, handler: (ctx: Context) => ctx.call("vault.secret") },
		open: { public: true, handler: (ctx: Context) => ctx.call("vault.open") }
	}
};

let broker: ServiceBroker;
before(async () => {
	broker = await createBroker({}, [Vault, Auditor, Intruder]);
});
after(() => broker.stop());

async function refused(p: Promise<unknown>, code: 401 | 403) {
	await assert.rejects(p, (e: Errors.MoleculerError) => {
		assert.equal(e.code, code);
		assert.equal(e.type, code === 401 ? ErrorType.UNAUTHORIZED : ErrorType.FORBIDDEN);
		return true;
	});
}

test("anonymous callers get public actions only (401 elsewhere)", async () => {
	assert.equal(await broker.call("vault.pub"), "pub");
	await refused(broker.call("vault.open"), 401);
	await refused(broker.call("vault.secret"), 401);
	await refused(broker.call("vault.open", {}, { meta: { user: null } }), 401);
});

test("users: undeclared actions open, declared ones need the permission or role (403)", async () => {
	assert.equal(await broker.call("vault.open", {}, asUser(READER)), "open");
	await refused(broker.call("vault.secret", {}, asUser(READER)), 403);
	assert.equal(await broker.call("vault.secret", {}, asUser(ADMIN)), "secret", "'*' grants everything");
	assert.equal(await broker.call("vault.secret", {}, asUser({ ...READER, permissions: ["vault:*"] })), "secret");
	await refused(broker.call("vault.admin", {}, asUser(READER)), 403);
	assert.equal(await broker.call("vault.admin", {}, asUser(ADMIN)), "admin");
});

test("service to service: the caller's own identity, granted by name; others refused", async () => {
	assert.equal(await broker.call("auditor.read"), "secret");
	await refused(broker.call("intruder.secret"), 403);
	assert.equal(await broker.call("intruder.open"), "open", "undeclared actions are open to any calling service");
	assert.equal(await broker.call("vault.viaSelf"), "secret");
});

test("an anonymous HTTP request stays anonymous down the call chain", async () => {
	// meta.user === null is what the gateway sets for a request without a token.
	await refused(broker.call("intruder.open", {}, { meta: { user: null } }), 401);
	assert.equal(await broker.call("auditor.read", {}, { meta: { user: null } }), "secret", "unless the service is granted by name");
});

test("refusal comes before the cache and the validator", async () => {
	assert.equal(await broker.call("vault.cached", { id: "a" }, asUser(ADMIN)), "cached a");
	assert.equal(await broker.call("vault.cached", { id: "a" }, asUser(ADMIN)), "cached a");
	assert.equal(handled, 1, "the second call was a cache hit");
	await refused(broker.call("vault.cached", { id: "a" }, asUser(READER)), 403);
	await refused(broker.call("vault.cached", { id: 42 }), 401);
});

test("Moleculer internals keep working without an identity", async () => {
	const services = await broker.call<{ name: string }[], object>("$node.services", { skipInternal: true });
	assert.deepEqual(services.map(s => s.name).sort(), ["auditor", "intruder", "vault"]);
});

test("a malformed declaration stops the service from being created", async () => {
	await assert.rejects(
		async () => broker.createService({ name: "broken", actions: { x: { permissions: "x:y" as unknown as string[], handler: () => 1 } } }),
		(e: Errors.MoleculerError) => e.type === ErrorType.CONFIG_INVALID
	);
});
