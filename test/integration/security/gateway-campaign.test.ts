import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createSecretKey, generateKeyPairSync } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { hashPassword } from "../../../lib/password.ts";
import { ADMIN, EDITOR, READER, signToken } from "../../support/auth.ts";
import { startNode, type LatticeNode } from "../../support/cluster.ts";

/**
 * The bad-input campaign: over 10,000 generated requests at a real gateway process (its own process, exactly as
 * `npm start` runs it, production mode) — malformed JSON, wrong types, oversized bodies, unicode and NUL bytes,
 * path traversal, header abuse and forged JWTs, mixed with valid traffic. The gateway must never answer 5xx,
 * never crash, and answer every bad request with a 4xx in Lattice's JSON error shape. A seeded PRNG keeps the
 * sequence the same on every run.
 */

const SEED = 0x1a77_1ce;
const TOTAL = 12_000;
const CONCURRENCY = 32;

/** mulberry32: small, fast, good enough to pick cases deterministically. */
function prng(seed: number) {
	let a = seed >>> 0;
	const next = () => {
		a = (a + 0x6d2b79f5) >>> 0;
		let t = a;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
	const int = (n: number) => Math.floor(next() * n);
	const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
	return { next, int, pick };
}
type Rng = ReturnType<typeof prng>;

interface HttpCase {
	kind: "http";
	category: string;
	method: string;
	path: string;
	headers: Record<string, string | string[]>;
	body?: Buffer | string;
}
interface RawCase {
	kind: "raw";
	category: string;
	bytes: Buffer | string;
}
type Case = HttpCase | RawCase;

interface Tokens {
	editor: string;
	reader: string;
	admin: string;
	forged: string[];
}

const JSON_CT = { "content-type": "application/json" };
const b64 = (o: unknown) => Buffer.from(typeof o === "string" ? o : JSON.stringify(o)).toString("base64url");

async function makeTokens(): Promise<Tokens> {
	const editor = await signToken(EDITOR);
	const [h, p, s] = editor.split(".") as [string, string, string];
	const claims = JSON.parse(Buffer.from(p, "base64url").toString());
	const now = Math.floor(Date.now() / 1000);
	const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
	const wrongKey = createSecretKey(Buffer.from("not-the-gateway-secret-but-long-enough-0000"));
	const forged = [
		`${b64({ alg: "none", typ: "JWT" })}.${b64({ ...claims, permissions: ["*"] })}.`,
		`${b64({ alg: "none" })}.${p}.`,
		`${b64({ alg: "NONE" })}.${p}.${s}`,
		await signToken(ADMIN, { key: wrongKey }),
		await signToken(ADMIN, { expiresIn: -3600 }),
		await signToken(ADMIN, { audience: "another-api" }),
		await signToken(ADMIN, { issuer: "https://evil.example" }),
		await signToken(ADMIN, { alg: "HS512", key: createSecretKey(Buffer.from("lattice-test-jwt-secret-not-a-secret-0123456789")) }),
		await signToken(ADMIN, { alg: "RS256", key: rsa.privateKey }),
		await signToken(ADMIN, {}, { nbf: now + 3600 }),
		await signToken({ ...ADMIN, id: "" }),
		`${h}.${b64({ ...claims, permissions: ["*"], roles: ["admin"] })}.${s}`,
		`${h}.${b64({ ...claims, exp: now + 10 * 365 * 86400 })}.${s}`,
		`${b64({ alg: "HS256", kid: "../../../../dev/null" })}.${p}.${s}`,
		`${b64({ alg: "HS256", jku: "https://evil.example/jwks" })}.${p}.${s}`,
		`${b64({ alg: "HS256", crit: ["exp"] })}.${p}.${s}`,
		`${b64("{not json")}.${p}.${s}`,
		`${h}.${b64("[]")}.${s}`,
		`${h}.${p}`,
		`${h}.${p}.${s}.${s}`,
		`${h}..${s}`,
		"....",
		"a".repeat(10_000),
		`${h}.${p}.${s.slice(0, -2)}`,
		`${h}.${p}.${"A".repeat(s.length)}`
	];
	return { editor, reader: await signToken(READER), admin: await signToken(ADMIN), forged };
}

function jsonValue(r: Rng, depth = 0): unknown {
	switch (r.int(depth > 2 ? 6 : 8)) {
		case 0:
			return null;
		case 1:
			return r.pick([true, false]);
		case 2:
			return r.pick([0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, 1e-320, 42]);
		case 3:
			return r.pick(["", "x", "a".repeat(r.int(2000)), "\u0000", "\ud800", "\u202e", "💩".repeat(50), "<script>", "' OR 1=1 --", "${7*7}"]);
		case 4:
			return r.pick(["1", "true", "null", "NaN", "Infinity", "-0", "0x10", "1e3"]);
		case 5:
			return [];
		case 6:
			return Array.from({ length: r.int(5) }, () => jsonValue(r, depth + 1));
		default:
			return Object.fromEntries(Array.from({ length: r.int(4) }, (_, i) => [r.pick(["name", "price", "stock", "id", "$where", "__proto__", "constructor", `k${i}`]), jsonValue(r, depth + 1)]));
	}
}

function productBody(r: Rng): unknown {
	const base: Record<string, unknown> = { name: "Campaign item", price: 9.5, stock: 3 };
	const field = r.pick(["name", "price", "stock", "extra", "__proto__", "id", "version"]);
	base[field] = jsonValue(r);
	if (r.int(4) === 0) delete base[r.pick(["name", "price"])];
	return r.int(10) === 0 ? r.pick([[], [base], "string", 42, null]) : base;
}

function malformedJson(r: Rng): string | Buffer {
	const valid = JSON.stringify({ name: "x", price: 1 });
	switch (r.int(10)) {
		case 0:
			return valid.slice(0, r.int(valid.length));
		case 1:
			return Buffer.from(Array.from({ length: 1 + r.int(300) }, () => r.int(256)));
		case 2:
			return "[".repeat(10_000 + r.int(20_000));
		case 3:
			return '{"a":'.repeat(5_000) + "1" + "}".repeat(5_000);
		case 4:
			return `\ufeff${valid}`;
		case 5:
			return `${valid}${r.pick(["}", "garbage", ",", "\u0000"])}`;
		case 6:
			return '{"name":"\\ud800\\udc00\\u0000\\uffff","price":1}';
		case 7:
			return '{"name":"x","price":1,"name":"y","price":"z"}';
		case 8:
			return r.pick(["", " ", "null", "true", "1", '"str"', "{'name':'x'}", "{name:x}", "NaN"]);
		default:
			return '{"name":"\\x41","price":01}';
	}
}

const TRAVERSAL = [
	"/api/../../etc/passwd",
	"/api/products/../../../etc/passwd",
	"/api/%2e%2e/%2e%2e/etc/passwd",
	"/api/products/..%2f..%2f..%2fetc%2fpasswd",
	"/api/products/%2e%2e%5c%2e%2e%5cwindows",
	"//api//products",
	"/api/./products/./",
	"/api/products/;/..",
	"/api/products/%00",
	"/api/products/%ED%A0%80",
	"/api/products/%C0%AE%C0%AE",
	"/api/products/%",
	"/api/products/%zz",
	"/api/products/%F0%9F%92%A9",
	"/api/$node/list",
	"/api/~node/health",
	"/api/products.list",
	"/api/api/rest",
	"/api/auth/login/../me",
	"/API/PRODUCTS",
	`/api/products/${"a".repeat(8_000)}`,
	"/api/products?limit=-1",
	"/api/products?page=999999999999999999999",
	"/api/products?pageSize=1e9",
	"/api/products?sort=__proto__",
	"/api/products?search[$gt]=",
	"/api/products?a[b][c][d][e][f][g]=1",
	"/api/products?query={\"$where\":\"sleep(1000)\"}",
	"/api/products?fields=password&populate=owner",
	`/api/products?${Array.from({ length: 1500 }, (_, i) => `p${i}=${i}`).join("&")}`,
	"/api/products?__proto__[admin]=1&constructor[prototype][admin]=1",
	"/api/products?search=%00%ff%fe",
	"/api/products/1?id=2",
	"/",
	"/favicon.ico",
	"/api",
	"/api/"
];

function rawRequest(r: Rng, token: string): string | Buffer {
	// Connection: close, so a request the server accepts ends with its answer too.
	const host = "Host: 127.0.0.1\r\nConnection: close\r\n";
	switch (r.int(16)) {
		case 0:
			return `GET /api/products HTTP/1.1\r\n${host}X-Huge: ${"a".repeat(17_000 + r.int(30_000))}\r\n\r\n`;
		case 1:
			return `GET /api/products HTTP/1.1\r\n${host}${Array.from({ length: 3000 }, (_, i) => `X-H${i}: ${"v".repeat(5)}\r\n`).join("")}\r\n`;
		case 2:
			return `POST /api/products HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\n{"a":1}`;
		case 3:
			return `POST /api/products HTTP/1.1\r\n${host}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`;
		case 4:
			return `POST /api/products HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`;
		case 5:
			return `GET /api/products HTTP/1.1\r\n${host}Bad Header: x\r\n\r\n`;
		case 6:
			return `GET /api/products HTTP/1.1\r\n${host}X-Nul: a\u0000b\r\n\r\n`;
		case 7:
			return `GET /api/pro ducts HTTP/1.1\r\n${host}\r\n`;
		case 8:
			return `G\u0000ET /api/products HTTP/1.1\r\n${host}\r\n`;
		case 9:
			return "GET /api/products\r\n\r\n";
		case 10:
			return `GET /api/products HTTP/9.9\r\n${host}\r\n`;
		case 11:
			return `GET /api/products HTTP/1.1\r\nConnection: close\r\n\r\n`;
		case 12:
			return `GET /api/products HTTP/1.1\r\n${host}X-Fold: a\r\n  folded\r\n\r\n`;
		case 13:
			return `GET /api/auth/me HTTP/1.1\r\n${host}Authorization: Bearer ${token}\r\nAuthorization: Bearer forged.token.here\r\n\r\n`;
		case 14:
			return Buffer.concat([Buffer.from(`GET /api/products HTTP/1.1\r\n${host}X-Bin: `), Buffer.from([0xff, 0xfe, 0x80, 0x0d]), Buffer.from("\r\n\r\n")]);
		default:
			return Buffer.concat([Buffer.from(Array.from({ length: 1 + r.int(400) }, () => r.int(256))), Buffer.from("\r\n\r\n")]);
	}
}

/** The whole campaign, generated up front from the seed: categories in fixed proportions, in a mixed order. */
function generate(r: Rng, t: Tokens, ids: string[]): Case[] {
	const auth = (token: string) => ({ authorization: `Bearer ${token}` });
	const writer = () => r.pick([t.editor, t.editor, t.reader, t.admin]);
	// Mostly the method and path a write really uses, so bodies reach parsing and validation; sometimes not.
	const target = (): [string, string] =>
		r.int(10) === 0
			? [r.pick(["POST", "PUT", "PATCH"]), r.pick(["/api/products", `/api/products/${r.pick(ids)}`])]
			: r.pick<[string, string]>([["POST", "/api/products"], ["PUT", `/api/products/${r.pick(ids)}`], ["PATCH", `/api/products/${r.pick(ids)}`]]);
	const makers: [number, string, () => Case][] = [
		[14, "malformed-json", () => {
			const [method, path] = target();
			return { kind: "http", category: "malformed-json", method, path, headers: { ...JSON_CT, ...auth(writer()) }, body: malformedJson(r) };
		}],
		[16, "wrong-types", () => {
			const login = r.int(12) === 0;
			const [method, path] = target();
			return login
				? { kind: "http", category: "wrong-types", method: "POST", path: "/api/auth/login", headers: JSON_CT, body: JSON.stringify(r.pick([{ username: jsonValue(r), password: "x" }, { username: "admin", password: jsonValue(r) }, jsonValue(r)])) }
				: { kind: "http", category: "wrong-types", method, path, headers: { ...JSON_CT, ...auth(writer()) }, body: JSON.stringify(productBody(r)) ?? "null" };
		}],
		[2, "oversized", () => ({ kind: "http", category: "oversized", method: "POST", path: "/api/products", headers: { ...JSON_CT, ...auth(t.editor) }, body: JSON.stringify({ name: "x".repeat(270_000 + r.int(400_000)), price: 1 }) })],
		[10, "unicode", () => ({
			kind: "http",
			category: "unicode",
			method: r.pick(["GET", "POST"]),
			path: r.pick(["/api/products", `/api/products/${encodeURIComponent(r.pick(["\u0000", "é", "\u202e", "💩", "\ufeff", "\u200b", "..", "ﬀ"]))}`, `/api/products?search=${encodeURIComponent("\u0000💩\u202e")}`]),
			headers: { ...JSON_CT, ...auth(t.editor) },
			body: JSON.stringify({ name: r.pick(["\u0000", "a\u0000b", "\ud83d", "\udc00x", "\u202egnp.exe", "💩".repeat(60), "\u200b", "ﬀ\ufeff", "Ω≈ç√", "x".repeat(200)]), price: 1 })
		})],
		[12, "path", () => ({ kind: "http", category: "path", method: r.pick(["GET", "GET", "DELETE", "OPTIONS", "HEAD", "PUT"]), path: r.pick(TRAVERSAL), headers: r.int(2) ? auth(t.admin) : {} })],
		[8, "headers", () => ({
			kind: "http",
			category: "headers",
			method: r.pick(["POST", "PUT", "PATCH", "GET"]),
			path: r.pick(["/api/products", `/api/products/${r.pick(ids)}`, "/api/auth/me"]),
			headers: {
				...auth(r.pick([t.editor, t.reader])),
				...r.pick<Record<string, string | string[]>>([
					{ "content-type": "text/plain" },
					{ "content-type": "application/x-www-form-urlencoded" },
					{ "content-type": "multipart/form-data; boundary=x" },
					{ "content-type": "application/json; charset=utf-16" },
					{ "content-type": "application/json; charset=latin1" },
					{ "content-type": "application/xml" },
					{ "content-type": "" },
					{ "content-type": "application/json", "content-encoding": "gzip" },
					{ "content-type": "application/json", "content-encoding": "br" },
					{ "x-request-id": "a".repeat(10_000) },
					{ "x-request-id": ["a", "b"], "x-correlation-id": "../../x" },
					{ "x-forwarded-for": "127.0.0.1, ::1, 10.0.0.1" },
					{ origin: "https://evil.example", "access-control-request-method": "DELETE" },
					{ accept: "text/html" },
					{ "accept-encoding": "gzip, deflate, br, zstd" },
					{ range: "bytes=0-1" },
					{ expect: "100-continue", "content-type": "application/json" }
				])
			},
			body: JSON.stringify({ name: "hdr", price: 2 })
		})],
		[12, "jwt", () => ({
			kind: "http",
			category: "jwt",
			method: r.pick(["GET", "GET", "POST", "DELETE"]),
			path: r.pick(["/api/products", "/api/auth/me", "/api/products", `/api/products/${r.pick(ids)}`]),
			headers: {
				...JSON_CT,
				authorization: r.pick([
					`Bearer ${r.pick(t.forged)}`,
					`Bearer ${r.pick(t.forged)}`,
					"Bearer",
					"Bearer ",
					`Bearer  ${t.editor}`,
					`bearer ${t.editor}`,
					`Basic ${b64("admin:lattice-admin")}`,
					`Token ${t.editor}`,
					`Bearer ${t.editor} ${t.admin}`,
					`Bearer ${t.editor}\u0001`.replace("\u0001", "x")
				])
			},
			body: JSON.stringify({ name: "jwt", price: 3 })
		})],
		[6, "raw", () => ({ kind: "raw", category: "raw", bytes: rawRequest(r, t.editor) })],
		[20, "valid", () => {
			switch (r.int(8)) {
				case 0:
					return { kind: "http", category: "valid", method: "GET", path: `/api/products?page=${1 + r.int(3)}&pageSize=${1 + r.int(50)}`, headers: {} };
				case 1:
					return { kind: "http", category: "valid", method: "GET", path: `/api/products/${r.pick(ids)}`, headers: {} };
				case 2:
					return { kind: "http", category: "valid", method: "POST", path: "/api/products", headers: { ...JSON_CT, ...auth(t.editor) }, body: JSON.stringify({ name: `Valid ${r.int(1e6)}`, price: 1 + r.int(100) }) };
				case 3:
					return { kind: "http", category: "valid", method: "POST", path: "/api/products", headers: { ...JSON_CT, ...auth(t.reader) }, body: JSON.stringify({ name: "Not allowed", price: 1 }) };
				case 4:
					return { kind: "http", category: "valid", method: "PATCH", path: `/api/products/${r.pick(ids)}`, headers: { ...JSON_CT, ...auth(t.editor) }, body: JSON.stringify({ stock: r.int(100) }) };
				case 5:
					return { kind: "http", category: "valid", method: "GET", path: "/api/auth/me", headers: auth(r.pick([t.editor, t.reader, t.admin])) };
				case 6:
					return { kind: "http", category: "valid", method: "POST", path: "/api/auth/login", headers: JSON_CT, body: JSON.stringify({ username: r.pick(["admin", "ghost"]), password: r.pick(["admin-pw", "wrong"]) }) };
				default:
					return { kind: "http", category: "valid", method: "DELETE", path: `/api/products/missing-${r.int(1000)}`, headers: auth(t.editor) };
			}
		}]
	];
	const weights = makers.reduce((s, [w]) => s + w, 0);
	return Array.from({ length: TOTAL }, () => {
		let x = r.int(weights);
		for (const [w, , make] of makers) {
			if (x < w) return make();
			x -= w;
		}
		throw new Error("unreachable");
	});
}

interface Answer {
	status: number;
	contentType: string;
	body: string;
}

function sendHttp(agent: http.Agent, port: number, c: HttpCase): Promise<Answer> {
	return new Promise((resolve, reject) => {
		// An explicit length: Node's client would otherwise send a GET or DELETE body unframed.
		const headers = c.body === undefined ? c.headers : { "content-length": String(Buffer.byteLength(c.body)), ...c.headers };
		const req = http.request({ agent, host: "127.0.0.1", port, method: c.method, path: c.path, headers }, res => {
			const chunks: Buffer[] = [];
			res.on("data", (b: Buffer) => chunks.push(b));
			res.on("end", () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"] ?? ""), body: Buffer.concat(chunks).toString() }));
			res.on("error", reject);
		});
		req.setTimeout(15_000, () => req.destroy(new Error("client timeout")));
		req.on("error", reject);
		req.end(c.body);
	});
}

function sendRaw(port: number, c: RawCase): Promise<Answer> {
	return new Promise((resolve, reject) => {
		const chunks: Buffer[] = [];
		// No half-close: Node aborts requests still in flight when the client ends its side first.
		const s = net.connect(port, "127.0.0.1", () => s.write(c.bytes));
		s.setTimeout(15_000, () => s.destroy(new Error("raw timeout")));
		s.on("data", (b: Buffer) => chunks.push(b));
		s.on("error", err => (chunks.length ? undefined : reject(err)));
		s.on("close", () => {
			const text = Buffer.concat(chunks).toString("latin1");
			const split = text.indexOf("\r\n\r\n");
			const head = split < 0 ? text : text.slice(0, split);
			const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
			const contentType = /\r\ncontent-type: ([^\r]*)/i.exec(head)?.[1] ?? "";
			let body = split < 0 ? "" : text.slice(split + 4);
			if (/\r\ntransfer-encoding: chunked/i.test(head)) body = dechunk(body);
			resolve({ status, contentType, body });
		});
	});
}

function dechunk(s: string): string {
	let out = "";
	let i = 0;
	for (;;) {
		const eol = s.indexOf("\r\n", i);
		if (eol < 0) return out;
		const size = parseInt(s.slice(i, eol), 16);
		if (!size) return out;
		out += s.slice(eol + 2, eol + 2 + size);
		i = eol + 4 + size;
	}
}

let node: LatticeNode;
let port: number;
let ids: string[];

before(async () => {
	const users = [{ username: "admin", passwordHash: await hashPassword("admin-pw", { ln: 10, r: 8, p: 1 }), roles: ["admin"], permissions: ["*"] }];
	node = await startNode({
		nodeID: "campaign-gateway",
		services: "api,auth,products",
		gateway: true,
		// No rate limit on the API route, so every request reaches the code under test; login keeps its own.
		env: { LATTICE_RATE_LIMIT: "0", LATTICE_USERS: JSON.stringify(users) }
	});
	port = node.gatewayPort!;
	const list = (await (await fetch(`${node.gatewayUrl}/api/products`)).json()) as { rows: { id: string }[] };
	ids = list.rows.map(r => r.id).concat(["missing", "0", "-1"]);
});

after(() => node?.stop());

test(`${TOTAL} generated bad (and some good) requests: no 5xx, no crash, every error a 4xx JSON answer`, { timeout: 120_000 }, async t => {
	const tokens = await makeTokens();
	const cases = generate(prng(SEED), tokens, ids);
	const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
	const byStatus = new Map<number, number>();
	const byCategory = new Map<string, Map<number, number>>();
	const problems: string[] = [];
	let next = 0;

	const check = (c: Case, a: Answer) => {
		byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1);
		const cat = byCategory.get(c.category) ?? new Map<number, number>();
		cat.set(a.status, (cat.get(a.status) ?? 0) + 1);
		byCategory.set(c.category, cat);
		const what = c.kind === "http" ? `${c.method} ${c.path.slice(0, 80)} [${c.category}]` : `raw ${String(c.bytes).slice(0, 60).replace(/[\r\n]/g, "⏎")}`;
		if (a.status >= 500 || a.status < 200) return problems.push(`${a.status} for ${what}: ${a.body.slice(0, 200)}`);
		if (c.kind === "http" && c.method === "HEAD") return;
		if (a.status >= 400) {
			if (!/^application\/json/.test(a.contentType)) return problems.push(`${a.status} not JSON (${a.contentType}) for ${what}`);
			let e: { code?: number; type?: unknown; stack?: unknown };
			try {
				e = JSON.parse(a.body);
			} catch {
				return problems.push(`${a.status} unparseable body for ${what}: ${a.body.slice(0, 100)}`);
			}
			if (e.code !== a.status || typeof e.type !== "string" || e.stack !== undefined) problems.push(`${a.status} bad error shape for ${what}: ${a.body.slice(0, 200)}`);
		}
	};

	const worker = async () => {
		while (next < cases.length) {
			const c = cases[next++]!;
			try {
				check(c, c.kind === "http" ? await sendHttp(agent, port, c) : await sendRaw(port, c));
			} catch (err) {
				problems.push(`no answer for ${c.category} ${c.kind === "http" ? `${c.method} ${c.path.slice(0, 60)}` : ""}: ${(err as Error).message}`);
			}
		}
	};
	await Promise.all(Array.from({ length: CONCURRENCY }, worker));
	agent.destroy();

	const summary = [...byCategory].map(([cat, m]) => `${cat}: ${[...m].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`).join(" ")}`).join("\n");
	t.diagnostic(`answers by category (status×count):\n${summary}`);
	assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems\n${summary}`);
	assert.equal([...byStatus.values()].reduce((a, b) => a + b, 0), TOTAL);
	// The campaign reached every layer: parser, body limits, auth, permissions, validation, routing, rate limit.
	for (const status of [200, 400, 401, 403, 404, 413, 415, 422, 429, 431]) {
		assert.ok((byStatus.get(status) ?? 0) > 0, `no ${status} answers:\n${summary}`);
	}
	assert.ok(node.alive(), "the gateway process is still running");
	assert.equal((await fetch(`${node.opsUrl}/ready`)).status, 200);
	const list = await fetch(`${node.gatewayUrl}/api/products?pageSize=5`);
	assert.equal(list.status, 200, "and still serving");
	assert.doesNotMatch(node.output.join(""), /uncaught|unhandled/i);
});
