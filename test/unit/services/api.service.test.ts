import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import net, { type AddressInfo } from "node:net";
import type { Server } from "node:http";
import type { Errors, ServiceBroker } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { hashPassword } from "../../../lib/password.ts";
import ApiService from "../../../services/api.service.ts";
import AuthService from "../../../services/auth.service.ts";
import ProductsService from "../../../services/products.service.ts";
import { bearer, EDITOR, READER, signToken } from "../../support/auth.ts";
import { createBroker } from "../../support/cluster.ts";

const JSON_TYPE = { "content-type": "application/json" };

async function gateway(env: Record<string, string> = {}): Promise<{ broker: ServiceBroker; base: string; port: number }> {
	const broker = await createBroker(env, [ApiService, AuthService, ProductsService]);
	const server = (broker.getLocalService("api") as unknown as { server: Server }).server;
	const port = (server.address() as AddressInfo).port;
	return { broker, base: `http://127.0.0.1:${port}/api`, port };
}

async function json(res: Response) {
	assert.match(res.headers.get("content-type") ?? "", /application\/json/);
	return (await res.json()) as Record<string, unknown>;
}

/** Sends raw bytes and returns the status line and body of the answer. */
function raw(port: number, request: string): Promise<{ status: number; body: string }> {
	return new Promise((resolve, reject) => {
		const s = net.connect(port, "127.0.0.1", () => s.write(request));
		let data = "";
		s.on("data", b => (data += b.toString("latin1")));
		s.on("error", reject);
		s.on("close", () => {
			const [head, ...rest] = data.split("\r\n\r\n");
			resolve({ status: Number(head?.split(" ")[1]), body: rest.join("\r\n\r\n") });
		});
	});
}

describe("gateway with Lattice's production defaults", () => {
	let broker: ServiceBroker;
	let base: string;
	let port: number;
	let editor: Record<string, string>;
	let reader: Record<string, string>;

	before(async () => {
		const users = [{ username: "ann", passwordHash: await hashPassword("ann-pw", { ln: 10, r: 8, p: 1 }), roles: ["staff"], permissions: ["products:write"] }];
		({ broker, base, port } = await gateway({ LATTICE_USERS: JSON.stringify(users) }));
		editor = { ...JSON_TYPE, ...bearer(await signToken(EDITOR)) };
		reader = { ...JSON_TYPE, ...bearer(await signToken(READER)) };
	});
	after(() => broker.stop());

	test("GET /api/products is public and carries a request id and the security headers", async () => {
		const res = await fetch(`${base}/products`);
		assert.equal(res.status, 200);
		assert.ok(res.headers.get("x-request-id"));
		assert.equal(res.headers.get("x-content-type-options"), "nosniff");
		assert.equal(res.headers.get("x-frame-options"), "DENY");
		assert.equal(res.headers.get("referrer-policy"), "no-referrer");
		assert.match(res.headers.get("content-security-policy") ?? "", /default-src 'none'/);
		assert.equal(res.headers.get("strict-transport-security"), null, "no HSTS over plain HTTP");
		assert.equal(res.headers.get("access-control-allow-origin"), null, "no CORS unless origins are configured");
		assert.equal((await json(res)).total, 3);
	});

	test("writes: anonymous 401 with WWW-Authenticate, without the permission 403, with it 200", async () => {
		const body = JSON.stringify({ name: "Scale", price: 49 });
		const anon = await fetch(`${base}/products`, { method: "POST", headers: JSON_TYPE, body });
		assert.equal(anon.status, 401);
		assert.match(anon.headers.get("www-authenticate") ?? "", /^Bearer/);
		assert.equal((await json(anon)).type, ErrorType.UNAUTHORIZED);
		const denied = await fetch(`${base}/products`, { method: "POST", headers: reader, body });
		assert.equal(denied.status, 403);
		assert.equal((await json(denied)).type, ErrorType.FORBIDDEN);
		const created = await fetch(`${base}/products`, { method: "POST", headers: editor, body });
		assert.equal(created.status, 200);
		const p = await json(created);
		const upd = await fetch(`${base}/products/${p.id}`, { method: "PATCH", headers: editor, body: JSON.stringify({ stock: 5 }) });
		assert.equal((await json(upd)).stock, 5);
		assert.equal((await fetch(`${base}/products/${p.id}`, { method: "DELETE", headers: reader })).status, 403);
		assert.equal((await fetch(`${base}/products/${p.id}`, { method: "DELETE", headers: editor })).status, 200);
		assert.equal((await fetch(`${base}/products/${p.id}`)).status, 404);
	});

	test("a bad token is a 401 even on a public route; forged, expired or foreign tokens never pass", async () => {
		const tokens = [
			"garbage",
			await signToken(EDITOR, { expiresIn: -600 }),
			await signToken(EDITOR, { audience: "someone-else" }),
			await signToken(EDITOR, { key: new TextEncoder().encode("a-different-secret-of-32-bytes!!!") })
		];
		for (const t of tokens) {
			const res = await fetch(`${base}/products`, { headers: bearer(t) });
			assert.equal(res.status, 401, t.slice(0, 20));
			assert.match(res.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
			assert.equal((await json(res)).type, ErrorType.TOKEN_INVALID);
		}
		const basic = await fetch(`${base}/products`, { headers: { authorization: "Basic YTpi" } });
		assert.equal(basic.status, 401);
	});

	test("login issues a token that /api/auth/me reads back; wrong passwords and extra fields are refused", async () => {
		const login = (body: unknown) => fetch(`${base}/auth/login`, { method: "POST", headers: JSON_TYPE, body: JSON.stringify(body) });
		const ok = await login({ username: "ann", password: "ann-pw" });
		assert.equal(ok.status, 200);
		const { accessToken, tokenType, expiresIn } = await json(ok);
		assert.equal(tokenType, "Bearer");
		assert.equal(expiresIn, 900);
		const me = await json(await fetch(`${base}/auth/me`, { headers: bearer(accessToken as string) }));
		assert.deepEqual(me, { id: "ann", username: "ann", roles: ["staff"], permissions: ["products:write"] });
		assert.equal((await fetch(`${base}/auth/me`)).status, 401);
		const bad = await login({ username: "ann", password: "nope" });
		assert.equal(bad.status, 401);
		assert.equal((await json(bad)).type, ErrorType.LOGIN_FAILED);
		assert.equal((await login({ username: "ghost", password: "ann-pw" })).status, 401);
		assert.equal((await login({ username: "ann", password: "ann-pw", admin: true })).status, 422);
	});

	test("only aliased actions are reachable: $node, unaliased and unknown paths are 404 JSON", async () => {
		for (const path of ["/$node/list", "/~node/list", "/products/list", "/products.list", "/nope", "/../products", "/auth/login"]) {
			const res = await fetch(`${base}${path}`);
			assert.equal(res.status, 404, path);
			const body = await json(res);
			assert.equal(body.code, 404);
			assert.ok(res.headers.get("x-request-id"), "errors carry a request id too");
			assert.equal(res.headers.get("x-content-type-options"), "nosniff", "and the security headers");
		}
		await assert.rejects(broker.call("api.addRoute", { route: { path: "/x" } }), (e: Errors.MoleculerError) => e.code === 404, "routes cannot be changed over the bus");
	});

	test("malformed JSON is a 400, invalid fields a 422 naming them, other media types a 415; no stack anywhere", async () => {
		const bad = await fetch(`${base}/products`, { method: "POST", headers: editor, body: "{nope" });
		assert.equal(bad.status, 400);
		const body = await json(bad);
		assert.equal(body.stack, undefined);
		assert.equal(body.type, ErrorType.BAD_REQUEST);

		const invalid = await fetch(`${base}/products`, { method: "POST", headers: editor, body: JSON.stringify({ name: 1, price: "x", isAdmin: true }) });
		assert.equal(invalid.status, 422);
		const err = await json(invalid);
		assert.equal(err.type, "VALIDATION_ERROR");
		assert.equal(err.stack, undefined);

		const text = await fetch(`${base}/products`, { method: "POST", headers: { ...editor, "content-type": "text/plain" }, body: "name=x" });
		assert.equal(text.status, 415);
		assert.equal((await json(text)).type, ErrorType.UNSUPPORTED_MEDIA_TYPE);
	});

	test("bodies over the limit are refused with 413", async () => {
		const res = await fetch(`${base}/products`, { method: "POST", headers: editor, body: JSON.stringify({ name: "x".repeat(300_000), price: 1 }) });
		assert.equal(res.status, 413);
		const body = await json(res);
		assert.equal(body.code, 413);
		assert.equal(body.type, ErrorType.PAYLOAD_TOO_LARGE);
	});

	test("requests Node's parser refuses are answered in the same JSON shape", async () => {
		const huge = await raw(port, `GET /api/products HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`);
		assert.equal(huge.status, 431);
		assert.equal(JSON.parse(huge.body).type, ErrorType.HEADERS_TOO_LARGE);
		const garbage = await raw(port, "GET /api/products HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
		assert.equal(garbage.status, 400);
		assert.equal(JSON.parse(garbage.body).type, ErrorType.BAD_REQUEST);
	});

	test("a sane caller request id is echoed; an insane one is replaced", async () => {
		const ok = await fetch(`${base}/products`, { headers: { "x-request-id": "abc-123" } });
		assert.equal(ok.headers.get("x-request-id"), "abc-123");
		const weird = await fetch(`${base}/products`, { headers: { "x-request-id": "a".repeat(500) } });
		assert.notEqual(weird.headers.get("x-request-id"), "a".repeat(500));
	});
});

describe("gateway rate limit, CORS and proxies", () => {
	let broker: ServiceBroker;
	let base: string;

	before(async () => {
		({ broker, base } = await gateway({
			LATTICE_RATE_LIMIT: "3",
			LATTICE_RATE_LIMIT_WINDOW: "3600",
			LATTICE_RATE_LIMIT_REDIS: "none",
			LATTICE_CORS_ORIGINS: "https://app.example.com",
			LATTICE_TRUSTED_PROXIES: "10.9.9.9"
		}));
	});
	after(() => broker.stop());

	test("over the limit: 429 with Retry-After; rotating X-Forwarded-For from an untrusted peer does not help", async () => {
		const statuses: number[] = [];
		let last: Response | undefined;
		for (let i = 0; i < 5; i++) {
			last = await fetch(`${base}/products`, { headers: { "x-forwarded-for": `198.51.100.${i}` } });
			statuses.push(last.status);
		}
		assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
		const retry = Number(last!.headers.get("retry-after"));
		assert.ok(retry >= 1 && retry <= 3600, `Retry-After ${retry}`);
		const body = await json(last!);
		assert.equal(body.type, ErrorType.RATE_LIMITED);
	});

	test("authenticated users have budgets of their own", async () => {
		for (let i = 0; i < 3; i++) assert.equal((await fetch(`${base}/products`, { headers: bearer(await signToken(READER)) })).status, 200);
		assert.equal((await fetch(`${base}/products`, { headers: bearer(await signToken(READER)) })).status, 429);
		assert.equal((await fetch(`${base}/products`, { headers: bearer(await signToken(EDITOR)) })).status, 200);
	});

	test("CORS: the listed origin is allowed, any other refused with 403", async () => {
		const preflight = await fetch(`${base}/products`, {
			method: "OPTIONS",
			headers: { origin: "https://app.example.com", "access-control-request-method": "POST", ...bearer(await signToken(EDITOR)) }
		});
		assert.equal(preflight.status, 204);
		assert.equal(preflight.headers.get("access-control-allow-origin"), "https://app.example.com");
		assert.match(preflight.headers.get("access-control-allow-headers") ?? "", /Authorization/);
		const other = await fetch(`${base}/products`, { headers: { origin: "https://app.example.co", ...bearer(await signToken(EDITOR)) } });
		assert.equal(other.status, 403);
		assert.equal((await json(other)).type, ErrorType.ORIGIN_NOT_ALLOWED);
	});
});

describe("gateway behind a trusted proxy", () => {
	let broker: ServiceBroker;
	let base: string;

	before(async () => {
		({ broker, base } = await gateway({ LATTICE_RATE_LIMIT: "2", LATTICE_RATE_LIMIT_WINDOW: "3600", LATTICE_RATE_LIMIT_REDIS: "none", LATTICE_TRUSTED_PROXIES: "127.0.0.1" }));
	});
	after(() => broker.stop());

	test("the proxy's X-Forwarded-For names the client the budget belongs to", async () => {
		const from = (ip: string) => fetch(`${base}/products`, { headers: { "x-forwarded-for": ip } }).then(r => r.status);
		assert.deepEqual([await from("198.51.100.1"), await from("198.51.100.1"), await from("198.51.100.1")], [200, 200, 429]);
		assert.equal(await from("198.51.100.2"), 200);
	});

	test("HSTS is sent when the proxy says the client used TLS", async () => {
		const res = await fetch(`${base}/products`, { headers: { "x-forwarded-for": "198.51.100.3", "x-forwarded-proto": "https" } });
		assert.equal(res.headers.get("strict-transport-security"), "max-age=31536000; includeSubDomains");
	});
});

test("production without a JWT key refuses to start the gateway", async () => {
	await assert.rejects(gateway({ LATTICE_JWT_SECRET: "" }), (e: Errors.MoleculerError) => e.type === ErrorType.CONFIG_INVALID && /JWT/.test(e.message));
});
