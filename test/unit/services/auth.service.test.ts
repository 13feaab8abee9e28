import { test } from "node:test";
import assert from "node:assert/strict";
import type { Errors, ServiceBroker } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { createTokenVerifier } from "../../../lib/jwt.ts";
import { jwtKeys } from "../../../lib/jwt-keys.ts";
import { latticeSettings } from "../../../lib/settings.ts";
import AuthService from "../../../services/auth.service.ts";
import { asUser, READER } from "../../support/auth.ts";
import { createBroker } from "../../support/cluster.ts";

async function withAuth(env: Record<string, string>, fn: (b: ServiceBroker) => Promise<void>) {
	const broker = await createBroker(env, [AuthService]);
	try {
		await fn(broker);
	} finally {
		await broker.stop();
	}
}

interface Issued {
	accessToken: string;
	expiresIn: number;
}

test("outside production the documented demo accounts log in, and their tokens verify", async () => {
	await withAuth({ NODE_ENV: "development" }, async broker => {
		const issued = await broker.call<Issued, object>("auth.login", { username: "admin", password: "lattice-admin" });
		const { auth } = latticeSettings(broker);
		const principal = await createTokenVerifier(jwtKeys(auth.jwt, false), auth.jwt)(issued.accessToken);
		assert.deepEqual(principal, { id: "admin", username: "admin", roles: ["admin"], permissions: ["*"] });
		const user = await broker.call<Issued, object>("auth.login", { username: "user", password: "lattice-user" });
		assert.ok(user.accessToken);
	});
});

test("production has no demo accounts", async () => {
	await withAuth({}, async broker => {
		await assert.rejects(broker.call("auth.login", { username: "admin", password: "lattice-admin" }), (e: Errors.MoleculerError) => e.code === 401 && e.type === ErrorType.LOGIN_FAILED);
	});
});

test("auth.me answers users only: anonymous 401, a service calling with no user 401", async () => {
	await withAuth({}, async broker => {
		assert.deepEqual(await broker.call("auth.me", {}, asUser(READER)), { id: READER.id, username: READER.username, roles: READER.roles, permissions: [] });
		await assert.rejects(broker.call("auth.me"), (e: Errors.MoleculerError) => e.code === 401);
		await assert.rejects(broker.call("auth.me", {}, { caller: "billing" }), (e: Errors.MoleculerError) => e.code === 401);
	});
});

test("with a JWKS (external identity provider) this node issues nothing: login is 404 LOGIN_DISABLED", async () => {
	await withAuth({ LATTICE_JWT_SECRET: "", LATTICE_JWT_JWKS_URL: "https://idp.example.com/jwks" }, async broker => {
		await assert.rejects(broker.call("auth.login", { username: "a", password: "b" }), (e: Errors.MoleculerError) => e.code === 404 && e.type === ErrorType.LOGIN_DISABLED);
	});
});

test("production without a JWT key refuses to start the auth service", async () => {
	await assert.rejects(createBroker({ LATTICE_JWT_SECRET: "" }, [AuthService]), (e: Errors.MoleculerError) => e.type === ErrorType.CONFIG_INVALID);
});
