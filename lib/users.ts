import { Errors } from "moleculer";
import type { Principal } from "./access.ts";
import { configError, ErrorType } from "./errors.ts";
import { DEFAULT_SCRYPT, hashPassword, isPasswordHash, parsePasswordHash, verifyPassword } from "./password.ts";

/** One login account, as given in LATTICE_USERS (a JSON array of these). */
export interface UserSeed {
	username: string;
	/** The token subject; defaults to the username. */
	id?: string;
	/** Plaintext, hashed at startup. Refused in production: give `passwordHash` there. */
	password?: string;
	/** `$scrypt$ln=…,r=…,p=…$salt$hash`, as printed by `hashPassword` (see the README). */
	passwordHash?: string;
	roles?: string[];
	permissions?: string[];
}

/** Seeded outside production when LATTICE_USERS is unset, so `npm start` and curl work out of the box. */
export const DEMO_USERS: readonly UserSeed[] = [
	{ username: "admin", password: "lattice-admin", roles: ["admin"], permissions: ["*"] },
	{ username: "user", password: "lattice-user", roles: ["user"], permissions: [] }
];

const USERNAME = /^[\w.@+-]{1,128}$/;

function stringArray(v: unknown, where: string): string[] {
	if (v === undefined) return [];
	if (!Array.isArray(v) || !v.every(s => typeof s === "string" && s.length > 0 && s.length <= 256)) {
		throw configError(`LATTICE_USERS: ${where} must be an array of strings`);
	}
	return v as string[];
}

/** Parses and checks LATTICE_USERS; any defect is a startup error naming the entry. */
export function parseUsers(json: string, production: boolean): UserSeed[] {
	let raw: unknown;
	try {
		raw = JSON.parse(json);
	} catch {
		throw configError("LATTICE_USERS must be a JSON array of {username, passwordHash, roles, permissions}");
	}
	if (!Array.isArray(raw)) throw configError("LATTICE_USERS must be a JSON array");
	const seen = new Set<string>();
	return raw.map((entry: unknown, i): UserSeed => {
		const u = entry as Record<string, unknown>;
		if (typeof u !== "object" || u === null) throw configError(`LATTICE_USERS[${i}] must be an object`);
		const extra = Object.keys(u).filter(k => !["username", "id", "password", "passwordHash", "roles", "permissions"].includes(k));
		if (extra.length) throw configError(`LATTICE_USERS[${i}]: unknown field(s) ${extra.join(", ")}`);
		if (typeof u.username !== "string" || !USERNAME.test(u.username)) {
			throw configError(`LATTICE_USERS[${i}].username must be 1–128 letters, digits or . @ + - _`);
		}
		if (seen.has(u.username)) throw configError(`LATTICE_USERS: duplicate username '${u.username}'`);
		seen.add(u.username);
		const where = `LATTICE_USERS[${i}] (${u.username})`;
		if ((u.password === undefined) === (u.passwordHash === undefined)) throw configError(`${where}: give exactly one of password, passwordHash`);
		if (u.passwordHash !== undefined && (typeof u.passwordHash !== "string" || !isPasswordHash(u.passwordHash))) {
			throw configError(`${where}: passwordHash is not a Lattice scrypt hash`);
		}
		if (u.password !== undefined) {
			if (production) throw configError(`${where}: plaintext passwords are refused in production; use passwordHash`);
			if (typeof u.password !== "string" || u.password.length === 0) throw configError(`${where}: password must be a non-empty string`);
		}
		if (u.id !== undefined && (typeof u.id !== "string" || u.id.length === 0)) throw configError(`${where}: id must be a non-empty string`);
		return {
			username: u.username,
			...(u.id !== undefined ? { id: u.id as string } : {}),
			...(u.password !== undefined ? { password: u.password as string } : { passwordHash: u.passwordHash as string }),
			roles: stringArray(u.roles, `${where}.roles`),
			permissions: stringArray(u.permissions, `${where}.permissions`)
		};
	});
}

interface Account {
	principal: Principal;
	hash: string;
}

export interface UserDirectoryOptions {
	/** scrypt checks running at once; each holds ~32 MiB and a libuv thread for ~0.1–0.25 s. */
	concurrency?: number;
	/** Checks waiting for a slot; beyond this, logins are refused with 429 until the queue drains. */
	maxQueue?: number;
}

/**
 * The login accounts of one auth service. Lookups of unknown names still pay for a full scrypt check against a
 * dummy hash, so response time does not reveal which usernames exist; concurrent checks are capped so a login
 * flood queues (then gets 429s) instead of starving the process's thread pool.
 */
export class UserDirectory {
	private readonly accounts: Map<string, Account>;
	private readonly dummyHash: string;
	private readonly concurrency: number;
	private readonly maxQueue: number;
	private running = 0;
	private readonly waiting: (() => void)[] = [];

	private constructor(accounts: Map<string, Account>, dummyHash: string, opts: UserDirectoryOptions) {
		this.accounts = accounts;
		this.dummyHash = dummyHash;
		this.concurrency = opts.concurrency ?? 2;
		this.maxQueue = opts.maxQueue ?? 64;
	}

	static async create(seeds: readonly UserSeed[], opts: UserDirectoryOptions = {}): Promise<UserDirectory> {
		const accounts = new Map<string, Account>();
		for (const s of seeds) {
			const hash = s.passwordHash ?? (await hashPassword(s.password!));
			accounts.set(s.username, {
				hash,
				principal: { id: s.id ?? s.username, username: s.username, roles: [...(s.roles ?? [])], permissions: [...(s.permissions ?? [])] }
			});
		}
		// The dummy costs what a real check costs, or unknown names would answer faster.
		const first = accounts.values().next().value;
		const params = (first && parsePasswordHash(first.hash)?.params) || DEFAULT_SCRYPT;
		return new UserDirectory(accounts, await hashPassword("lattice-dummy-password", params), opts);
	}

	get size(): number {
		return this.accounts.size;
	}

	/** The account's principal when the password matches, otherwise null. */
	async authenticate(username: string, password: string): Promise<Principal | null> {
		const account = this.accounts.get(username);
		await this.acquire();
		try {
			const ok = await verifyPassword(password, account?.hash ?? this.dummyHash);
			return ok && account ? { ...account.principal } : null;
		} finally {
			this.release();
		}
	}

	private acquire(): Promise<void> {
		if (this.running < this.concurrency) {
			this.running++;
			return Promise.resolve();
		}
		if (this.waiting.length >= this.maxQueue) {
			return Promise.reject(new Errors.MoleculerClientError("Too many login attempts in progress", 429, ErrorType.RATE_LIMITED));
		}
		// The slot is handed over by release(), so `running` stays counted.
		return new Promise(resolve => this.waiting.push(resolve));
	}

	private release(): void {
		const next = this.waiting.shift();
		if (next) next();
		else this.running--;
	}
}
