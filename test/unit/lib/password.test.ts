import { test } from "node:test";
import assert from "node:assert/strict";
import { hashPassword, isPasswordHash, parsePasswordHash, verifyPassword } from "../../../lib/password.ts";

const FAST = { ln: 10, r: 8, p: 1 };

test("a hash verifies its password only, and carries its own cost", async () => {
	const h = await hashPassword("correct horse", FAST);
	assert.match(h, /^\$scrypt\$ln=10,r=8,p=1\$[\w-]{22}\$[\w-]{43}$/);
	assert.equal(await verifyPassword("correct horse", h), true);
	assert.equal(await verifyPassword("correct horsf", h), false);
	assert.equal(await verifyPassword("", h), false);
	assert.notEqual(await hashPassword("correct horse", FAST), h, "salted");
	assert.deepEqual(parsePasswordHash(h)?.params, FAST);
});

test("the default cost is scrypt N=2^15, r=8, p=1", async () => {
	assert.match(await hashPassword("x"), /^\$scrypt\$ln=15,r=8,p=1\$/);
});

test("unicode passwords are normalised (NFC), so the same text typed differently matches", async () => {
	const h = await hashPassword("caf\u00e9", FAST);
	assert.equal(await verifyPassword("cafe\u0301", h), true);
});

test("malformed or out-of-range hashes never match and never throw", async () => {
	const good = await hashPassword("pw", FAST);
	for (const bad of ["", "plain", good.replace("ln=10", "ln=31"), good.replace("ln=10", "ln=5"), good.replace("$scrypt$", "$argon2id$"), good.slice(0, -10)]) {
		assert.equal(isPasswordHash(bad), false, bad);
		assert.equal(await verifyPassword("pw", bad), false, bad);
	}
	await assert.rejects(hashPassword("pw", { ln: 40, r: 8, p: 1 }), RangeError);
});
