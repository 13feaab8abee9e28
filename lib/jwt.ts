import { randomUUID } from "node:crypto";
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from "jose";
import { Errors } from "moleculer";
import type { Principal } from "./access.ts";
import { ErrorType, unauthorized } from "./errors.ts";
import type { JwtKeys, JwtSettings } from "./jwt-keys.ts";

/** Signing and checking access tokens with the keys lib/jwt-keys.ts resolves: the gateway and auth services only. */

const MAX_TOKEN_LENGTH = 8192;

export interface IssuedToken {
	token: string;
	/** Seconds since the epoch. */
	expiresAt: number;
	expiresIn: number;
}

export type TokenIssuer = (principal: Principal) => Promise<IssuedToken>;

/** Signs access tokens, or null when this node holds no signing key (public key or JWKS only). */
export function createTokenIssuer(keys: JwtKeys, settings: JwtSettings): TokenIssuer | null {
	const signKey = keys.signKey;
	if (!signKey) return null;
	const alg = keys.algorithms[0]!;
	return async principal => {
		const now = Math.floor(Date.now() / 1000);
		const expiresAt = now + settings.ttl;
		const token = await new SignJWT({ name: principal.username, roles: principal.roles, permissions: principal.permissions })
			.setProtectedHeader({ alg, typ: "JWT" })
			.setSubject(principal.id)
			.setIssuer(settings.issuer)
			.setAudience(settings.audience)
			.setIssuedAt(now)
			.setNotBefore(now)
			.setExpirationTime(expiresAt)
			.setJti(randomUUID())
			.sign(signKey);
		return { token, expiresAt, expiresIn: settings.ttl };
	};
}

function strings(v: unknown): string[] {
	return Array.isArray(v) ? v.filter((s): s is string => typeof s === "string") : [];
}

/** Lattice's claims (`roles`, `permissions`) plus the common IdP ones (`preferred_username`, OAuth `scope`). */
export function principalFrom(payload: JWTPayload): Principal {
	const name = typeof payload.name === "string" ? payload.name : payload.preferred_username;
	const scope = typeof payload.scope === "string" ? payload.scope.split(" ").filter(Boolean) : [];
	return {
		id: payload.sub!,
		...(typeof name === "string" ? { username: name } : {}),
		roles: strings(payload.roles),
		permissions: [...strings(payload.permissions), ...scope]
	};
}

/** The JWKS could not be fetched or read (network, timeout, non-200, not a key set): not the token's fault. */
function idpFault(err: unknown): boolean {
	if (err instanceof TypeError) return true;
	if (!(err instanceof joseErrors.JOSEError)) return false;
	return err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid || err.code === "ERR_JOSE_GENERIC";
}

export type TokenVerifier = (token: string) => Promise<Principal>;

function invalid(reason: string): Errors.MoleculerClientError {
	return unauthorized(reason === "expired" ? "Token expired" : "Invalid token", ErrorType.TOKEN_INVALID, { reason });
}

/**
 * Verifies signature, algorithm (pinned: `alg: none` and HS/RS confusion never pass), expiry, not-before,
 * issuer and audience with the configured clock tolerance. Every failure is a 401 TOKEN_INVALID; an
 * unreachable JWKS is a 503, since the token may well be fine.
 */
export function createTokenVerifier(keys: JwtKeys, settings: JwtSettings): TokenVerifier {
	const options = {
		algorithms: keys.algorithms,
		issuer: settings.issuer,
		audience: settings.audience,
		clockTolerance: settings.clockTolerance,
		requiredClaims: ["sub", "exp"]
	};
	const key =
		keys.verifyKey instanceof URL
			? createRemoteJWKSet(keys.verifyKey, { timeoutDuration: 5_000, cooldownDuration: 30_000, cacheMaxAge: 600_000 })
			: keys.verifyKey;
	return async token => {
		if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw invalid("malformed");
		try {
			const { payload } = typeof key === "function" ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options);
			if (typeof payload.sub !== "string" || payload.sub.length === 0) throw invalid("claims");
			return principalFrom(payload);
		} catch (err) {
			if (err instanceof Errors.MoleculerError) throw err;
			if (err instanceof joseErrors.JWTExpired) throw invalid("expired");
			if (keys.source === "jwks" && idpFault(err)) {
				throw new Errors.MoleculerError("Identity provider unreachable", 503, ErrorType.AUTH_UNAVAILABLE);
			}
			if (err instanceof joseErrors.JWTClaimValidationFailed) throw invalid("claims");
			if (err instanceof joseErrors.JOSEAlgNotAllowed) throw invalid("algorithm");
			throw invalid("signature");
		}
	};
}
