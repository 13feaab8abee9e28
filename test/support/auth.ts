import { createSecretKey, type KeyObject } from "node:crypto";
import { SignJWT, type JWTPayload } from "jose";
import type { Principal } from "../../lib/access.ts";
import { defaultJwtSettings } from "../../lib/jwt-keys.ts";
import { TEST_JWT_SECRET } from "./cluster.ts";

/** Identities for calls made in tests, with and without the example domain's write permission. */
export const ADMIN: Principal = { id: "admin-1", username: "admin", roles: ["admin"], permissions: ["*"] };
export const EDITOR: Principal = { id: "editor-1", username: "editor", roles: ["staff"], permissions: ["products:write"] };
export const READER: Principal = { id: "reader-1", username: "reader", roles: ["user"], permissions: [] };

/** Call options that make a broker call on behalf of `user`, as the gateway does after verifying a token. */
export function asUser(user: Principal): { meta: { user: Principal } } {
	return { meta: { user } };
}

export interface TokenOptions {
	key?: KeyObject | Uint8Array;
	alg?: string;
	issuer?: string;
	audience?: string;
	/** Seconds from now; negative for an expired token. */
	expiresIn?: number;
	header?: Record<string, unknown>;
}

/** A token as Lattice issues it (HS256 with TEST_JWT_SECRET by default); every part can be bent for attacks. */
export async function signToken(user: Principal, opts: TokenOptions = {}, extra: JWTPayload = {}): Promise<string> {
	const now = Math.floor(Date.now() / 1000);
	return new SignJWT({ name: user.username, roles: user.roles, permissions: user.permissions, ...extra })
		.setProtectedHeader({ alg: opts.alg ?? "HS256", typ: "JWT", ...opts.header })
		.setSubject(user.id)
		.setIssuer(opts.issuer ?? defaultJwtSettings.issuer)
		.setAudience(opts.audience ?? defaultJwtSettings.audience)
		.setIssuedAt(now)
		.setExpirationTime(now + (opts.expiresIn ?? 300))
		.sign(opts.key ?? createSecretKey(Buffer.from(TEST_JWT_SECRET)));
}

export function bearer(token: string): Record<string, string> {
	return { authorization: `Bearer ${token}` };
}
