import { createPrivateKey, createPublicKey, createSecretKey, randomBytes, type KeyObject } from "node:crypto";
import { configError } from "./errors.ts";

/**
 * JWT key configuration: which key source is set, whether it is usable, and the keys and pinned algorithms it
 * gives. Node's crypto only: every node checks its settings at start (moleculer.config.ts), while only the nodes
 * that sign or verify tokens load the JOSE library (lib/jwt.ts).
 */

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

export interface JwtKeys {
	/** The one algorithm tokens are signed with and the only ones accepted: never taken from the token. */
	algorithms: string[];
	signKey: KeyObject | null;
	/** The key tokens are checked with, or the identity provider's JWKS URL (lib/jwt.ts fetches the key set). */
	verifyKey: KeyObject | URL;
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
		return { algorithms: [...settings.algorithms], signKey: null, verifyKey: jwksUrl(settings.jwksUrl), ephemeral: false, source: "jwks" };
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
