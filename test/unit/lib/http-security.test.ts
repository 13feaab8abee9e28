import { test } from "node:test";
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import type { Errors } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { arrivedOverTls, clientAddress, originMatcher, trustedProxies } from "../../../lib/http-security.ts";

function req(remoteAddress: string, headers: Record<string, string> = {}, encrypted = false): IncomingMessage {
	return { socket: { remoteAddress, encrypted }, headers } as unknown as IncomingMessage;
}

test("without trusted proxies the socket peer is the client, whatever X-Forwarded-For says", () => {
	assert.equal(clientAddress(req("203.0.113.9", { "x-forwarded-for": "1.2.3.4" }), null), "203.0.113.9");
	assert.equal(clientAddress(req("::ffff:203.0.113.9"), null), "203.0.113.9");
});

test("behind trusted proxies the first untrusted hop from the right is the client", () => {
	const proxies = trustedProxies(["10.0.0.0/8", "192.168.1.5"]);
	assert.equal(clientAddress(req("10.1.2.3", { "x-forwarded-for": "198.51.100.7" }), proxies), "198.51.100.7");
	// A client cannot hide behind a value it prepends itself.
	assert.equal(clientAddress(req("10.1.2.3", { "x-forwarded-for": "1.1.1.1, 198.51.100.7, 192.168.1.5" }), proxies), "198.51.100.7");
	assert.equal(clientAddress(req("203.0.113.9", { "x-forwarded-for": "1.1.1.1" }), proxies), "203.0.113.9", "an untrusted peer's header is ignored");
	assert.equal(clientAddress(req("10.1.2.3", { "x-forwarded-for": "garbage" }), proxies), "10.1.2.3");
	assert.equal(clientAddress(req("10.1.2.3"), proxies), "10.1.2.3");
});

test("TLS: the socket, or X-Forwarded-Proto from a trusted proxy only", () => {
	const proxies = trustedProxies(["10.0.0.1"]);
	assert.equal(arrivedOverTls(req("203.0.113.9", {}, true), null), true);
	assert.equal(arrivedOverTls(req("203.0.113.9", { "x-forwarded-proto": "https" }), proxies), false);
	assert.equal(arrivedOverTls(req("10.0.0.1", { "x-forwarded-proto": "https" }), proxies), true);
	assert.equal(arrivedOverTls(req("10.0.0.1", { "x-forwarded-proto": "http" }), proxies), false);
});

test("CORS origins match exactly (no substring tricks) or by a subdomain wildcard", () => {
	const allowed = originMatcher(["https://app.example.com", "https://*.example.org"]);
	assert.equal(allowed("https://app.example.com"), true);
	assert.equal(allowed("https://app.example.co"), false);
	assert.equal(allowed("https://app.example.com.evil.net"), false);
	assert.equal(allowed("http://app.example.com"), false);
	assert.equal(allowed("https://a.b.example.org"), true);
	assert.equal(allowed("https://example.org"), false);
	assert.equal(allowed("https://evilexample.org"), false);
});

test("bad proxy or origin lists are startup errors", () => {
	const invalid = (e: Errors.MoleculerError) => e.type === ErrorType.CONFIG_INVALID;
	assert.throws(() => trustedProxies(["10.0.0.0/33"]), invalid);
	assert.throws(() => trustedProxies(["proxy.local"]), invalid);
	assert.throws(() => originMatcher(["app.example.com"]), invalid);
	assert.throws(() => originMatcher(["https://app.example.com/path"]), invalid);
});
