import { BlockList, isIP } from "node:net";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { configError } from "./errors.ts";

/**
 * HTTP-edge helpers for the gateway: who the client is (without trusting spoofable headers), whether the
 * request arrived over TLS, the security headers every response carries, and an exact CORS origin check.
 */

/** Proxies allowed to speak for the client through X-Forwarded-For / X-Forwarded-Proto (IPs or CIDRs). */
export function trustedProxies(list: readonly string[]): BlockList | null {
	if (list.length === 0) return null;
	const block = new BlockList();
	for (const entry of list) {
		const [addr, bits] = entry.split("/");
		const family = isIP(addr ?? "");
		if (!family) throw configError(`LATTICE_TRUSTED_PROXIES: '${entry}' is not an IP address or CIDR`);
		const type = family === 6 ? "ipv6" : "ipv4";
		if (bits === undefined) {
			block.addAddress(addr!, type);
			continue;
		}
		const prefix = Number(bits);
		if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32)) {
			throw configError(`LATTICE_TRUSTED_PROXIES: bad prefix length in '${entry}'`);
		}
		block.addSubnet(addr!, prefix, type);
	}
	return block;
}

function normalize(addr: string): string {
	// IPv4 clients of a dual-stack socket show up as ::ffff:a.b.c.d.
	return addr.startsWith("::ffff:") && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
}

function isTrusted(addr: string, proxies: BlockList | null): boolean {
	if (!proxies) return false;
	const family = isIP(addr);
	return family !== 0 && proxies.check(addr, family === 6 ? "ipv6" : "ipv4");
}

/**
 * The client's address: the socket peer, unless that peer is a trusted proxy, in which case X-Forwarded-For is
 * read from the right, skipping trusted hops, and the first untrusted address is the client. Without trusted
 * proxies the header is ignored, since any client can write it.
 */
export function clientAddress(req: IncomingMessage, proxies: BlockList | null): string {
	const peer = normalize(req.socket.remoteAddress ?? "unknown");
	if (!isTrusted(peer, proxies)) return peer;
	const header = req.headers["x-forwarded-for"];
	const hops = (Array.isArray(header) ? header.join(",") : (header ?? "")).split(",").map(s => normalize(s.trim())).filter(Boolean);
	for (let i = hops.length - 1; i >= 0; i--) {
		const hop = hops[i]!;
		if (isIP(hop) === 0) return peer;
		if (!isTrusted(hop, proxies)) return hop;
	}
	return hops[0] ?? peer;
}

/** TLS on this socket, or `X-Forwarded-Proto: https` set by a trusted proxy that terminated it. */
export function arrivedOverTls(req: IncomingMessage, proxies: BlockList | null): boolean {
	if ((req.socket as TLSSocket).encrypted) return true;
	if (!isTrusted(normalize(req.socket.remoteAddress ?? ""), proxies)) return false;
	const proto = req.headers["x-forwarded-proto"];
	const first = (Array.isArray(proto) ? proto[0] : proto)?.split(",")[0]?.trim().toLowerCase();
	return first === "https";
}

export const SECURITY_HEADERS: readonly (readonly [string, string])[] = [
	["X-Content-Type-Options", "nosniff"],
	["X-Frame-Options", "DENY"],
	["Referrer-Policy", "no-referrer"],
	// The API serves JSON only: nothing in a response may load, run or be framed.
	["Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"],
	["Cross-Origin-Resource-Policy", "same-origin"],
	["Cache-Control", "no-store"]
];

/** Headers for every gateway response, errors and 404s included. HSTS only where the client used TLS. */
export function setSecurityHeaders(res: ServerResponse, tls: boolean, hstsMaxAge: number): void {
	for (const [name, value] of SECURITY_HEADERS) res.setHeader(name, value);
	if (tls && hstsMaxAge > 0) res.setHeader("Strict-Transport-Security", `max-age=${hstsMaxAge}; includeSubDomains`);
}

/**
 * Exact origin matching (`https://app.example.com`), or one leading wildcard label pattern
 * (`https://*.example.com`, matching subdomains only). moleculer-web's own string matching treats a configured
 * origin as a substring, so `https://app.example.co` would pass for `https://app.example.com`: never hand it
 * the list.
 */
export function originMatcher(origins: readonly string[]): (origin: string) => boolean {
	const exact = new Set<string>();
	const patterns: RegExp[] = [];
	for (const o of origins) {
		const m = /^(https?):\/\/\*\.([a-z0-9.-]+(?::\d+)?)$/i.exec(o);
		if (m) {
			patterns.push(new RegExp(`^${m[1]}://[a-z0-9-]+(?:\\.[a-z0-9-]+)*\\.${m[2]!.replace(/\./g, "\\.")}$`, "i"));
			continue;
		}
		let url: URL;
		try {
			url = new URL(o);
		} catch {
			throw configError(`LATTICE_CORS_ORIGINS: '${o}' is not an origin like https://app.example.com`);
		}
		if (url.origin !== o.replace(/\/$/, "").toLowerCase() || !/^https?:$/.test(url.protocol)) {
			throw configError(`LATTICE_CORS_ORIGINS: '${o}' must be a bare origin (scheme://host[:port])`);
		}
		exact.add(url.origin);
	}
	return origin => exact.has(origin) || patterns.some(p => p.test(origin));
}
