import { createPrivateKey, createPublicKey, createSecretKey, randomBytes, randomUUID, type KeyObject } from "node:crypto";
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, SignJWT, type JWTPayload, type JWTVerifyGetKey } from "jose";
import { Errors } from "moleculer";
import type { Principal } from "./access.ts";
import { configError, ErrorType, unauthorized } from "./errors.ts";

/** JWT settings, read from LATTICE_JWT_* by moleculer.config.ts. Exactly one key source may be set. */
export interface JwtSettings {
	/** HS256 shared secret (at least 32 bytes). */
	secret: string | null;
	/** PEM private key: RSA (RS256, ≥ 2048 bits), Ed25519 (EdDSA) or P-256 (ES256). Only the issuer needs it. */
	privateKey: string | null;
	/** PEM public key matching `privateKey`; a gateway that only verifies needs just this. */
	publicKey: string | null;
	/** JWKS of an external identity provider (verification only; login is then off). */
	jwksUrl: string | null;
	/** Algorithms accepted from the JWKS. */
	algorithms: string[];
	issuer: string;
	audience: string;
	/** Access token lifetime, seconds. */
	ttl: number;
	/** Leeway for exp/nbf/iat between clocks, seconds. */
	clockTolerance: number;
}

export const defaultJwtSettings: JwtSettings = {
	secret: null,
	privateKey: null,
	publicKey: null,
	jwksUrl: null,
	algorithms: ["RS256"],
	issuer: "lattice",
	audience: "lattice-api",
	ttl: 900,
	clockTolerance: 30
};

const ASYMMETRIC = new Set(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"]);
const MAX_TOKEN_LENGTH = 8192;

export interface JwtKeys {
	/** The one algorithm tokens are signed with and the only ones accepted: never taken from the token. */
	algorithms: string[];
	signKey: KeyObject | null;
	verifyKey: KeyObject | JWTVerifyGetKey;
	/** A random secret made for this process because none was configured (development only). */
	ephemeral: boolean;
	source: "secret" | "key pair" | "public key" | "jwks";
}

// One per settings object, so an issuer and a gateway in the same development process agree on it.
const ephemeralSecrets = new WeakMap<JwtSettings, KeyObject>();

function pem(text: string): string {
	// Environment variables often carry PEM with literal "\n" instead of newlines.
	return text.includes("\\n") ? text.replace(/\\n/g, "\n") : text;
}

function algorithmFor(key: KeyObject, what: string): string {
	const details = key.asymmetricKeyDetails ?? {};
	switch (key.asymmetricKeyType) {
		case "rsa":
			if ((details.modulusLength ?? 0) < 2048) throw configError(`${what}: RSA keys must have at least 2048 bits`);
			return "RS256";
		case "ed25519":
			return "EdDSA";
		case "ec":
			if (details.namedCurve === "prime256v1") return "ES256";
			throw configError(`${what}: only the P-256 curve is supported for EC keys, got ${details.namedCurve}`);
		default:
			throw configError(`${what}: unsupported key type '${key.asymmetricKeyType}' (use RSA, Ed25519 or P-256)`);
	}
}

function readKey(text: string, kind: "private" | "public", variable: string): KeyObject {
	try {
		return kind === "private" ? createPrivateKey(pem(text)) : createPublicKey(pem(text));
	} catch (err) {
		throw configError(`${variable} is not a valid PEM ${kind} key: ${(err as Error).message}`);
	}
}

function jwksUrl(raw: string): URL {
	let url: URL;
	try {
		url = new URL(raw);
	} catch {
		throw configError(`LATTICE_JWT_JWKS_URL is not a URL: '${raw}'`);
	}
	const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
	if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) {
		throw configError("LATTICE_JWT_JWKS_URL must be https (plain http only on loopback)");
	}
	return url;
}

/**
 * Resolves the configured key source into pinned algorithms and key objects. Refuses ambiguous or weak
 * configurations; with no source at all, production refuses to start and development gets a random secret.
 */
export function jwtKeys(settings: JwtSettings, production: boolean): JwtKeys {
	const sources = [settings.secret, settings.privateKey ?? settings.publicKey, settings.jwksUrl].filter(s => s);
	if (sources.length > 1) {
		throw configError("Set only one JWT key source: LATTICE_JWT_SECRET, LATTICE_JWT_PRIVATE_KEY/PUBLIC_KEY or LATTICE_JWT_JWKS_URL");
	}
	if (settings.secret) {
		if (Buffer.byteLength(settings.secret) < 32) throw configError("LATTICE_JWT_SECRET must be at least 32 bytes (e.g. `openssl rand -base64 48`)");
		const key = createSecretKey(Buffer.from(settings.secret));
		return { algorithms: ["HS256"], signKey: key, verifyKey: key, ephemeral: false, source: "secret" };
	}
	if (settings.privateKey || settings.publicKey) {
		const signKey = settings.privateKey ? readKey(settings.privateKey, "private", "LATTICE_JWT_PRIVATE_KEY") : null;
		const verifyKey = settings.publicKey ? readKey(settings.publicKey, "public", "LATTICE_JWT_PUBLIC_KEY") : createPublicKey(signKey!);
		if (signKey && settings.publicKey) {
			const derived = createPublicKey(signKey).export({ format: "jwk" });
			if (JSON.stringify(derived) !== JSON.stringify(verifyKey.export({ format: "jwk" }))) {
				throw configError("LATTICE_JWT_PUBLIC_KEY does not belong to LATTICE_JWT_PRIVATE_KEY");
			}
		}
		const alg = algorithmFor(verifyKey, "LATTICE_JWT_PUBLIC_KEY/PRIVATE_KEY");
		return { algorithms: [alg], signKey, verifyKey, ephemeral: false, source: signKey ? "key pair" : "public key" };
	}
	if (settings.jwksUrl) {
		const bad = settings.algorithms.filter(a => !ASYMMETRIC.has(a));
		if (settings.algorithms.length === 0 || bad.length > 0) {
			throw configError(`LATTICE_JWT_ALGORITHMS must list asymmetric algorithms only (e.g. RS256, ES256, EdDSA), got '${settings.algorithms.join(",")}'`);
		}
		const jwks = createRemoteJWKSet(jwksUrl(settings.jwksUrl), { timeoutDuration: 5_000, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
		return { algorithms: [...settings.algorithms], signKey: null, verifyKey: jwks, ephemeral: false, source: "jwks" };
	}
	if (production) {
		throw configError("No JWT key configured: set LATTICE_JWT_SECRET, LATTICE_JWT_PRIVATE_KEY/PUBLIC_KEY or LATTICE_JWT_JWKS_URL");
	}
	let key = ephemeralSecrets.get(settings);
	if (!key) {
		key = createSecretKey(randomBytes(48));
		ephemeralSecrets.set(settings, key);
	}
	return { algorithms: ["HS256"], signKey: key, verifyKey: key, ephemeral: true, source: "secret" };
}

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
	const key = keys.verifyKey;
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
