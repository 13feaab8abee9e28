import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";

/**
 * Password hashes in the PHC string format: `$scrypt$ln=15,r=8,p=1$<salt>$<hash>` (16-byte salt, 32-byte key,
 * base64url without padding).
 * The cost travels with each hash, so raising it later leaves existing hashes verifiable.
 *
 * ln=15 (N=32768, 32 MiB) costs ~0.1–0.25 s per check on a small 2-core machine: a guessing attacker with the
 * hash pays the same per guess, and the gateway's login route limits how often anyone can ask.
 */
export interface ScryptParams {
	/** log2 of N, the CPU/memory cost. */
	ln: number;
	r: number;
	p: number;
}

export const DEFAULT_SCRYPT: ScryptParams = { ln: 15, r: 8, p: 1 };

const KEY_LENGTH = 32;
const SALT_LENGTH = 16;
// Bounds for parameters read back from a hash: enough for any sane cost, not enough to stall the process.
const LIMITS = { ln: [10, 20], r: [1, 32], p: [1, 16] } as const;
const PHC = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([\w-]{22})\$([\w-]{43})$/;

function derive(password: string, salt: Buffer, params: ScryptParams, length: number): Promise<Buffer> {
	const N = 2 ** params.ln;
	const options: ScryptOptions = { N, r: params.r, p: params.p, maxmem: 256 * N * params.r };
	return new Promise((resolve, reject) => scrypt(password.normalize("NFC"), salt, length, options, (err, key) => (err ? reject(err) : resolve(key))));
}

function inLimits(params: ScryptParams): boolean {
	return (Object.keys(LIMITS) as (keyof ScryptParams)[]).every(k => params[k] >= LIMITS[k][0] && params[k] <= LIMITS[k][1]);
}

export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
	if (!inLimits(params)) throw new RangeError(`scrypt parameters out of range: ${JSON.stringify(params)}`);
	const salt = randomBytes(SALT_LENGTH);
	const key = await derive(password, salt, params, KEY_LENGTH);
	return `$scrypt$ln=${params.ln},r=${params.r},p=${params.p}$${salt.toString("base64url")}$${key.toString("base64url")}`;
}

interface ParsedHash {
	params: ScryptParams;
	salt: Buffer;
	key: Buffer;
}

export function parsePasswordHash(encoded: string): ParsedHash | null {
	const m = PHC.exec(encoded);
	if (!m) return null;
	const params = { ln: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
	if (!inLimits(params)) return null;
	return { params, salt: Buffer.from(m[4]!, "base64url"), key: Buffer.from(m[5]!, "base64url") };
}

export function isPasswordHash(encoded: string): boolean {
	return parsePasswordHash(encoded) !== null;
}

/** Constant-time check of a password against a hash; a malformed hash never matches. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
	const parsed = parsePasswordHash(encoded);
	if (!parsed) return false;
	const key = await derive(password, parsed.salt, parsed.params, KEY_LENGTH);
	return timingSafeEqual(key, parsed.key);
}
