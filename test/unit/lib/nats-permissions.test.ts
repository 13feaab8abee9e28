import { test } from "node:test";
import assert from "node:assert/strict";
import type { Errors } from "moleculer";
import { nkeys } from "nats";
import { ErrorType } from "../../../lib/errors.ts";
import { natsUsers, renderNatsAuthorization, type BusPolicy } from "../../../lib/nats-permissions.ts";

const policy: BusPolicy = {
	namespace: "prod",
	members: {
		gateway: { calls: ["products.*", "auth.login"], eventGroups: ["api"] },
		catalog: { serves: ["products.>"], emits: ["products.changed"], broadcasts: true, nodeIds: "catalog.*", password: "$CATALOG_PW" }
	}
};

test("each member may publish only to the actions it calls and the events it emits", () => {
	const [gateway, catalog] = natsUsers(policy);
	assert.equal(gateway!.user, "gateway");
	const pub = gateway!.permissions.publish.allow;
	assert.ok(pub.includes("MOL-prod.REQB.products.*") && pub.includes("MOL-prod.REQB.auth.login"));
	assert.ok(!pub.some(s => s.startsWith("MOL-prod.REQ.")), "targeted requests would bypass the per-action subjects");
	assert.ok(!pub.some(s => s.startsWith("MOL-prod.EVENT")), "the gateway neither emits nor broadcasts");
	assert.ok(!gateway!.permissions.subscribe.allow.some(s => s.includes("REQB.products")), "the gateway does not serve products");

	assert.ok(catalog!.permissions.subscribe.allow.includes("MOL-prod.REQB.products.>"));
	assert.ok(catalog!.permissions.publish.allow.includes("MOL-prod.EVENTB.*.products.changed"));
	assert.ok(catalog!.permissions.publish.allow.includes("MOL-prod.EVENT.>"));
	// Its per-node subjects are its own: it cannot read responses meant for the gateway's nodes.
	assert.ok(catalog!.permissions.subscribe.allow.includes("MOL-prod.RES.catalog.*"));
	assert.ok(!catalog!.permissions.subscribe.allow.includes("MOL-prod.RES.>"));
});

test("passwords default to a server-side variable; $NAME values stay unquoted, nkeys replace user names", () => {
	const user = nkeys.createUser().getPublicKey();
	const text = renderNatsAuthorization({ namespace: "", members: { ...policy.members, edge: { nkey: user } } });
	assert.match(text, /user: "gateway"\n\s+password: \$NATS_PASSWORD_GATEWAY\n/);
	assert.match(text, /password: \$CATALOG_PW\n/);
	assert.match(text, new RegExp(`nkey: "${user}"`));
	assert.match(text, /"MOL\.REQB\.products\.\*"/, "no namespace: subjects start with MOL.");
});

test("a malformed policy is a config error naming the offending entry", () => {
	const bad: Array<[BusPolicy, RegExp]> = [
		[{ namespace: "prod", members: { a: { calls: ["products. list"] } } }, /members\.a\.calls/],
		[{ namespace: "prod", members: { a: { serves: ["products.>.x"] } } }, /members\.a\.serves/],
		[{ namespace: "prod", members: { a: { eventGroups: ["a.b"] } } }, /members\.a\.eventGroups/],
		[{ namespace: "prod", members: { "a.b": {} } }, /members\.a\.b/],
		[{ namespace: "prod", members: { a: { nkey: "SUxxx" } } }, /members\.a\.nkey/],
		[{ namespace: "a b", members: {} }, /namespace/],
		[{ namespace: "prod" } as BusPolicy, /members/]
	];
	for (const [p, pattern] of bad) {
		assert.throws(
			() => natsUsers(p),
			(err: Errors.MoleculerError) => err.type === ErrorType.CONFIG_INVALID && pattern.test(err.message),
			JSON.stringify(p)
		);
	}
});
