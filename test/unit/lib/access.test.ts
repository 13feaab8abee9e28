import { test } from "node:test";
import assert from "node:assert/strict";
import type { Errors } from "moleculer";
import { compileRule, decide, type AccessRule, type Principal } from "../../../lib/access.ts";
import { ErrorType } from "../../../lib/errors.ts";

const user = (permissions: string[], roles: string[] = []): Principal => ({ id: "u1", roles, permissions });
const rule = (r: AccessRule) => compileRule({ name: "orders.create", ...r }, "orders");
const outcome = (r: AccessRule, u: unknown, caller: string | null = null) => {
	const d = decide(rule(r), u, caller);
	return d.allow ? "allow" : d.status;
};

test("public actions are open to everyone, anonymous included", () => {
	assert.equal(outcome({ public: true }, null), "allow");
	assert.equal(outcome({ public: true }, undefined), "allow");
	assert.equal(outcome({ public: true, permissions: ["x"] }, null), "allow");
});

test("undeclared actions: any user or calling service, never an anonymous caller", () => {
	assert.equal(outcome({}, user([])), "allow");
	assert.equal(outcome({}, undefined, "billing"), "allow", "a service calling with its own identity");
	assert.equal(outcome({}, null), 401, "the gateway's anonymous client");
	assert.equal(outcome({}, null, "api"), 401, "anonymous stays anonymous through the gateway's caller");
	assert.equal(outcome({}, undefined, null), 401, "no user and no caller");
});

test("permissions: all required; wildcards grant by prefix; roles: any one", () => {
	assert.equal(outcome({ permissions: ["orders:write"] }, user(["orders:write"])), "allow");
	assert.equal(outcome({ permissions: ["orders:write"] }, user(["orders:read"])), 403);
	assert.equal(outcome({ permissions: ["orders:write", "orders:audit"] }, user(["orders:write"])), 403);
	assert.equal(outcome({ permissions: ["orders:write"] }, user(["orders:*"])), "allow");
	assert.equal(outcome({ permissions: ["orders:write"] }, user(["*"])), "allow");
	assert.equal(outcome({ permissions: ["orders:write"] }, user(["order*"])), 403, "only ':*' and '*' are wildcards");
	assert.equal(outcome({ permissions: ["ordersx:write"] }, user(["orders:*"])), 403);
	assert.equal(outcome({ roles: ["admin", "staff"] }, user([], ["staff"])), "allow");
	assert.equal(outcome({ roles: ["admin"] }, user([], ["staff"])), 403);
	assert.equal(outcome({ roles: ["admin"], permissions: ["orders:write"] }, user(["orders:write"], ["staff"])), 403, "both conditions when both are declared");
	assert.equal(outcome({ permissions: ["orders:write"] }, null), 401);
});

test("service grants: listed services pass whoever the user is; others with no user get 403", () => {
	const r = { permissions: ["orders:write"], services: ["checkout"] };
	assert.equal(outcome(r, undefined, "checkout"), "allow");
	assert.equal(outcome(r, user([]), "checkout"), "allow", "checkout acting inside a user's request");
	assert.equal(outcome(r, null, "checkout"), "allow", "…even an anonymous one: checkout's own call decides");
	assert.equal(outcome(r, undefined, "reports"), 403);
	assert.equal(outcome({ services: ["checkout"] }, user(["*"])), 403, "a services-only action is internal");
	assert.equal(outcome({ permissions: ["orders:write"] }, undefined, "orders"), "allow", "a service may call its own actions");
});

test("a malformed identity in meta is refused, not trusted", () => {
	assert.equal(outcome({}, { id: "x" }), 401);
	assert.equal(outcome({}, "admin"), 401);
});

test("malformed declarations are startup errors", () => {
	for (const bad of [{ permissions: "orders:write" }, { roles: [""] }, { services: [1] }, { public: "yes" }]) {
		assert.throws(
			() => compileRule({ name: "a.b", ...(bad as AccessRule) }, "a"),
			(e: Errors.MoleculerError) => e.type === ErrorType.CONFIG_INVALID,
			JSON.stringify(bad)
		);
	}
});
