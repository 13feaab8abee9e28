import { test } from "node:test";
import assert from "node:assert/strict";
import type { Errors } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { hashPassword } from "../../../lib/password.ts";
import { parseUsers, UserDirectory } from "../../../lib/users.ts";

const configInvalid = (e: Errors.MoleculerError) => e.type === ErrorType.CONFIG_INVALID;

test("LATTICE_USERS: hashes anywhere, plaintext outside production only", async () => {
	const hash = await hashPassword("s3cret", { ln: 10, r: 8, p: 1 });
	const users = parseUsers(JSON.stringify([{ username: "ann", passwordHash: hash, roles: ["staff"], permissions: ["products:write"] }]), true);
	assert.deepEqual(users, [{ username: "ann", passwordHash: hash, roles: ["staff"], permissions: ["products:write"] }]);
	assert.equal(parseUsers('[{"username":"bob","password":"pw"}]', false)[0]?.password, "pw");
	assert.throws(() => parseUsers('[{"username":"bob","password":"pw"}]', true), configInvalid);
});

test("LATTICE_USERS: every defect is a startup error", () => {
	for (const bad of [
		"{nope",
		'{"username":"a"}',
		'[{"username":"a b","password":"x"}]',
		'[{"username":"a","password":"x","passwordHash":"$scrypt$"}]',
		'[{"username":"a"}]',
		'[{"username":"a","passwordHash":"md5:abc"}]',
		'[{"username":"a","password":"x","roles":"admin"}]',
		'[{"username":"a","password":"x","isAdmin":true}]',
		'[{"username":"a","password":"x"},{"username":"a","password":"y"}]'
	]) {
		assert.throws(() => parseUsers(bad, false), configInvalid, bad);
	}
});

test("the directory checks passwords and answers the same way for unknown names", async () => {
	const dir = await UserDirectory.create([{ username: "ann", id: "u-1", password: "pw-ann", roles: ["staff"], permissions: ["x:y"] }]);
	assert.deepEqual(await dir.authenticate("ann", "pw-ann"), { id: "u-1", username: "ann", roles: ["staff"], permissions: ["x:y"] });
	assert.equal(await dir.authenticate("ann", "wrong"), null);
	assert.equal(await dir.authenticate("nobody", "pw-ann"), null);
});

test("a login flood beyond the queue is refused with 429 instead of piling up", async () => {
	const dir = await UserDirectory.create([{ username: "ann", password: "pw" }], { concurrency: 1, maxQueue: 2 });
	const results = await Promise.allSettled(Array.from({ length: 6 }, () => dir.authenticate("ann", "pw")));
	const refused = results.filter(r => r.status === "rejected").map(r => (r as PromiseRejectedResult).reason as Errors.MoleculerError);
	assert.equal(results.filter(r => r.status === "fulfilled").length, 3, "one running and two queued");
	assert.ok(refused.every(e => e.code === 429 && e.type === ErrorType.RATE_LIMITED));
	assert.ok(await dir.authenticate("ann", "pw"), "the directory recovers once the queue drains");
});
