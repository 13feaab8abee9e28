import crypto, { type KeyObject } from "node:crypto";
import { createRequire } from "node:module";
import { configError } from "./errors.ts";

/**
 * The sealed envelope every Lattice packet travels in: an AEAD over the serialized Moleculer packet, bound to the
 * subject it was published on, with a per-packet nonce and a timestamp so a receiver can refuse forgeries, packets
 * moved to another subject or namespace, and replays.
 *
 *   0      version: 0xA1 AES-256-GCM, 0xA2 ChaCha20-Poly1305 (never '{' or another serializer's first byte)
 *   1      key id (from the key itself, so a receiver knows whether to use the current or the previous key)
 *   2      scope kind: 0 broadcast, 1 targeted at one node, 2 balanced (NATS queue group)
 *   3-6    sender id: random per process
 *   7-14   counter: starts at a random value, +1 per packet
 *   15-20  sender's clock, ms since the epoch
 *   21-    ciphertext, then the 16-byte tag
 *
 * Bytes 3-14 are the nonce. The random 4-byte sender id alone would repeat once ~77,000 processes have ever used a
 * key (birthday bound, 50%); the random counter start makes two processes that drew the same id also need
 * overlapping counter ranges (each a few billion out of 2^48), so a nonce never repeats under one key in practice.
 * The additional data is the 21-byte header followed by the scope: namespace prefix, packet type and, for targeted
 * packets, the receiving node id, so a packet only opens where its sender addressed it.
 */

export const CIPHERS = ["aes-256-gcm", "chacha20-poly1305"] as const;
export type PacketCipher = (typeof CIPHERS)[number];

const VERSION: Record<PacketCipher, number> = { "aes-256-gcm": 0xa1, "chacha20-poly1305": 0xa2 };

/** The two calls of sodium-native (libsodium) that Lattice uses: ChaCha20-Poly1305 IETF, the RFC 8439 construction. */
export interface Sodium {
	crypto_aead_chacha20poly1305_ietf_encrypt(c: Buffer, m: Buffer, ad: Buffer, nsec: null, npub: Buffer, k: Buffer): number;
	crypto_aead_chacha20poly1305_ietf_decrypt(m: Buffer, nsec: null, c: Buffer, ad: Buffer, npub: Buffer, k: Buffer): number;
}

let sodiumModule: Sodium | null | undefined;

/**
 * libsodium through the optional `sodium-native` addon, or null where it does not load (not installed, or no
 * prebuilt binary for the platform, such as musl). Node's cipher objects cost a few µs each to create, and on a
 * busy node that has just woken up for a batch a cold `createDecipheriv` measured 9 µs; libsodium seals and opens in
 * one call into buffers Lattice provides. Both produce the same RFC 8439 bytes, so nodes with and without the addon
 * open each other's packets.
 */
export function sodium(): Sodium | null {
	if (sodiumModule === undefined) {
		try {
			sodiumModule = createRequire(import.meta.url)("sodium-native") as Sodium;
		} catch {
			sodiumModule = null;
		}
	}
	return sodiumModule;
}

/** The cipher a node seals with when LATTICE_CLUSTER_CIPHER is not set: ChaCha20-Poly1305 when libsodium is there. */
export function defaultCipher(): PacketCipher {
	return sodium() ? "chacha20-poly1305" : "aes-256-gcm";
}
const CIPHER_OF = new Map<number, PacketCipher>(CIPHERS.map(c => [VERSION[c], c]));

export const HEADER_BYTES = 21;
export const TAG_BYTES = 16;
const NONCE_AT = 3;
const COUNTER_AT = 7;
const TIME_AT = 15;
const TWO_32 = 2 ** 32;

export const ScopeKind = { broadcast: 0, targeted: 1, balanced: 2 } as const;
export type ScopeKind = (typeof ScopeKind)[keyof typeof ScopeKind];

export const MIN_KEY_BYTES = 32;

/**
 * Set to true on a `transporterSend` function that is done with the `data` it is given by the time it returns (it
 * copies or transforms it synchronously, as sealing does): its caller may then build the next packet in the same
 * buffer. Large buffers allocated from JavaScript are what drive V8 into major collections under load ("external
 * memory pressure"), so not allocating one per batch matters.
 */
export const RELEASES_DATA = Symbol.for("lattice.transporterSend.releasesData");

/**
 * A cluster key as written in the environment: base64 (standard or URL-safe) or hex, at least 32 bytes once
 * decoded. `openssl rand -base64 32` makes one.
 */
export function parseClusterKey(text: string, name: string): Buffer {
	const t = text.trim();
	let key: Buffer | null = null;
	if (/^(?:[0-9a-fA-F]{2})+$/.test(t) && t.length >= MIN_KEY_BYTES * 2) key = Buffer.from(t, "hex");
	else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) key = Buffer.from(t, /[-_]/.test(t) ? "base64url" : "base64");
	if (!key || key.length < MIN_KEY_BYTES) {
		throw configError(
			`${name} must be base64 or hex of at least ${MIN_KEY_BYTES} random bytes (generate one with: openssl rand -base64 32)`,
			{ name, decodedBytes: key?.length ?? 0 }
		);
	}
	return key;
}

/** Keys used to open packets: the current one (also used to seal) and, during a rollover, the previous one. */
export interface ClusterKeys {
	current: Buffer;
	previous?: Buffer | null;
}

export type KeyLabel = "current" | "previous";

interface DerivedKey {
	id: number;
	label: KeyLabel;
	aead: Record<PacketCipher, KeyObject>;
	/** The ChaCha20-Poly1305 subkey's bytes, for libsodium (which takes no KeyObject). */
	chachaBytes: Buffer;
}

const SALT = Buffer.from("lattice/cluster-key/v1");

function derive(master: Buffer, label: KeyLabel): DerivedKey {
	const hkdf = (info: string, length: number) => Buffer.from(crypto.hkdfSync("sha256", master, SALT, info, length));
	const chachaBytes = hkdf("lattice/v1/packet/chacha20-poly1305", 32);
	return {
		id: hkdf("lattice/v1/key-id", 1)[0]!,
		label,
		// One subkey per cipher: a sender's choice of cipher never makes two ciphers share a key.
		aead: {
			"aes-256-gcm": crypto.createSecretKey(hkdf("lattice/v1/packet/aes-256-gcm", 32)),
			"chacha20-poly1305": crypto.createSecretKey(chachaBytes)
		},
		chachaBytes
	};
}

/** Why a packet was not let through. Stable: these are metric label values. */
export type RejectReason = "unprotected" | "malformed" | "unknown_key" | "stale" | "forged" | "replayed";

export type OpenResult = { ok: true; data: Buffer; key: KeyLabel } | { ok: false; reason: RejectReason };

export interface PacketSealOptions {
	keys: ClusterKeys;
	/** Cipher used to seal; both are always accepted when opening. Default: `defaultCipher()`. */
	cipher?: PacketCipher;
	/** ChaCha20-Poly1305 through libsodium when the addon loads (true, the default), or always through node:crypto. */
	useSodium?: boolean;
	/** Largest accepted difference between the sender's clock and ours, in ms. Default 30 s. */
	maxSkewMs?: number;
	/** Senders whose replay windows are kept; beyond it the least recently seen is forgotten. Default 4096. */
	maxSenders?: number;
	/** Clock, for tests. */
	now?: () => number;
}

/**
 * Seals and opens envelopes for one process. Sealing is synchronous so the counter order is the publish order,
 * which keeps every receiver's replay window moving forward.
 */
export class PacketSeal {
	private readonly cipher: PacketCipher;
	private readonly version: number;
	private readonly sealKey: DerivedKey;
	private readonly byId = new Map<number, DerivedKey[]>();
	private readonly maxSkewMs: number;
	private readonly now: () => number;
	private readonly senderId: number;
	private counter: number;
	private readonly replay: ReplayGuard;
	private aad = Buffer.allocUnsafe(256);
	private readonly sodium: Sodium | null;

	constructor(opts: PacketSealOptions) {
		this.sodium = opts.useSodium === false ? null : sodium();
		this.cipher = opts.cipher ?? (this.sodium ? "chacha20-poly1305" : "aes-256-gcm");
		this.version = VERSION[this.cipher];
		this.maxSkewMs = opts.maxSkewMs ?? 30_000;
		this.now = opts.now ?? Date.now;
		this.sealKey = derive(opts.keys.current, "current");
		const all = [this.sealKey];
		if (opts.keys.previous) all.push(derive(opts.keys.previous, "previous"));
		// Two keys may draw the same one-byte id (1 in 256): both are then tried, current first.
		for (const k of all) this.byId.set(k.id, [...(this.byId.get(k.id) ?? []), k]);
		this.senderId = crypto.randomBytes(4).readUInt32BE(0);
		this.counter = crypto.randomBytes(6).readUIntBE(0, 6);
		this.replay = new ReplayGuard(opts.maxSenders ?? 4096, 2 * this.maxSkewMs);
	}

	/** The cipher this process seals with and what runs it, e.g. `chacha20-poly1305 (libsodium)`, for the start-up log. */
	get sealingWith(): string {
		return `${this.cipher} (${this.sodium && this.cipher === "chacha20-poly1305" ? "libsodium" : "node:crypto"})`;
	}

	seal(scope: Buffer, kind: ScopeKind, data: Buffer): Buffer {
		const out = Buffer.allocUnsafe(HEADER_BYTES + data.length + TAG_BYTES);
		const n = this.counter++;
		out[0] = this.version;
		out[1] = this.sealKey.id;
		out[2] = kind;
		out.writeUInt32BE(this.senderId, NONCE_AT);
		out.writeUInt32BE(Math.floor(n / TWO_32), COUNTER_AT);
		out.writeUInt32BE(n >>> 0, COUNTER_AT + 4);
		out.writeUIntBE(this.now(), TIME_AT, 6);
		const nonce = out.subarray(NONCE_AT, TIME_AT);
		if (this.sodium && this.cipher === "chacha20-poly1305") {
			// Ciphertext and tag written straight after the header.
			this.sodium.crypto_aead_chacha20poly1305_ietf_encrypt(out.subarray(HEADER_BYTES), data, this.additionalData(out, scope), null, nonce, this.sealKey.chachaBytes);
			return out;
		}
		const c = cipherOf(this.cipher, this.sealKey.aead[this.cipher], nonce);
		c.setAAD(this.additionalData(out, scope));
		c.update(data).copy(out, HEADER_BYTES);
		c.final();
		c.getAuthTag().copy(out, HEADER_BYTES + data.length);
		return out;
	}

	/**
	 * `scopeOf(kind)` gives the scope this receiver expects for that kind, or null when it accepts none. With
	 * libsodium, the plaintext is written into `into` when it is large enough (a view of it is returned, valid until
	 * `into` is reused), else into a new buffer.
	 */
	open(buf: Buffer, scopeOf: (kind: number) => Buffer | null, into?: Buffer): OpenResult {
		if (buf.length === 0) return { ok: false, reason: "malformed" };
		const cipher = CIPHER_OF.get(buf[0]!);
		// Any serializer's output (JSON '{', MsgPack/CBOR maps) from a node without the key.
		if (!cipher) return { ok: false, reason: "unprotected" };
		if (buf.length < HEADER_BYTES + TAG_BYTES) return { ok: false, reason: "malformed" };
		const keys = this.byId.get(buf[1]!);
		if (!keys) return { ok: false, reason: "unknown_key" };
		const scope = scopeOf(buf[2]!);
		if (!scope) return { ok: false, reason: "malformed" };
		// Checked before the tag only to spend no decryption on old packets; an attacker moving the clock gains
		// nothing, the timestamp is authenticated below.
		const sent = buf.readUIntBE(TIME_AT, 6);
		if (Math.abs(this.now() - sent) > this.maxSkewMs) return { ok: false, reason: "stale" };

		const nonce = buf.subarray(NONCE_AT, TIME_AT);
		const aad = this.additionalData(buf, scope);
		for (const key of keys) {
			try {
				let data: Buffer;
				if (this.sodium && cipher === "chacha20-poly1305") {
					const length = buf.length - HEADER_BYTES - TAG_BYTES;
					data = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
					// Ciphertext and tag as one: libsodium checks the tag before it writes any plaintext.
					this.sodium.crypto_aead_chacha20poly1305_ietf_decrypt(data, null, buf.subarray(HEADER_BYTES), aad, nonce, key.chachaBytes);
				} else {
					const d = decipherOf(cipher, key.aead[cipher], nonce);
					d.setAAD(aad);
					d.setAuthTag(buf.subarray(buf.length - TAG_BYTES));
					data = d.update(buf.subarray(HEADER_BYTES, buf.length - TAG_BYTES));
					d.final();
				}
				// The window only moves for authentic packets, so forgeries cannot push real ones out of it.
				const counter = buf.readUInt32BE(COUNTER_AT) * TWO_32 + buf.readUInt32BE(COUNTER_AT + 4);
				if (!this.replay.accept(buf.readUInt32BE(NONCE_AT), counter, this.now())) return { ok: false, reason: "replayed" };
				return { ok: true, data, key: key.label };
			} catch {
				// Wrong key or tampered: try the next key with this id, if any.
			}
		}
		return { ok: false, reason: "forged" };
	}

	/** Header and scope, contiguous in a scratch buffer that OpenSSL copies from synchronously. */
	private additionalData(header: Buffer, scope: Buffer): Buffer {
		const len = HEADER_BYTES + scope.length;
		if (this.aad.length < len) this.aad = Buffer.allocUnsafe(len * 2);
		header.copy(this.aad, 0, 0, HEADER_BYTES);
		scope.copy(this.aad, HEADER_BYTES);
		return this.aad.subarray(0, len);
	}
}

// One branch per cipher because Node's typings only accept a literal algorithm name with AEAD options.
function cipherOf(alg: PacketCipher, key: KeyObject, nonce: Buffer) {
	return alg === "aes-256-gcm"
		? crypto.createCipheriv(alg, key, nonce, { authTagLength: TAG_BYTES })
		: crypto.createCipheriv(alg, key, nonce, { authTagLength: TAG_BYTES });
}

function decipherOf(alg: PacketCipher, key: KeyObject, nonce: Buffer) {
	return alg === "aes-256-gcm"
		? crypto.createDecipheriv(alg, key, nonce, { authTagLength: TAG_BYTES })
		: crypto.createDecipheriv(alg, key, nonce, { authTagLength: TAG_BYTES });
}

/** The scope bytes for a packet: namespace prefix, packet type and, for a targeted packet, the receiving node. */
export function scopeBytes(prefix: string, type: string, target: string): Buffer {
	return Buffer.from(`${prefix}\0${type}\0${target}`);
}

const WINDOW_BLOCKS = 128;
const WINDOW = (WINDOW_BLOCKS - 1) * 32;

/**
 * Anti-replay window per sender (RFC 6479): accepts each counter value once, and nothing more than ~4,000 behind
 * the highest seen. NATS delivers one publisher's messages to a subscriber in order, so honest packets are never
 * that far behind. Senders not heard from for `idleMs` are forgotten: anything they sent before then is outside
 * the timestamp window anyway.
 */
export class ReplayGuard {
	private readonly senders = new Map<number, { max: number; bits: Uint32Array; seen: number }>();
	private readonly maxSenders: number;
	private readonly idleMs: number;
	private lastSweep = 0;

	constructor(maxSenders: number, idleMs: number) {
		this.maxSenders = maxSenders;
		this.idleMs = idleMs;
	}

	accept(sender: number, n: number, now: number): boolean {
		let s = this.senders.get(sender);
		if (!s) {
			if (this.senders.size >= this.maxSenders) this.sweep(now, true);
			s = { max: -1, bits: new Uint32Array(WINDOW_BLOCKS), seen: now };
			this.senders.set(sender, s);
		} else if (now - this.lastSweep > this.idleMs) {
			this.sweep(now, false);
		}
		if (n + WINDOW <= s.max) return false;
		const block = Math.floor(n / 32);
		if (n > s.max) {
			const current = Math.floor(s.max / 32);
			const ahead = Math.min(block - current, WINDOW_BLOCKS);
			for (let i = 1; i <= ahead; i++) s.bits[(current + i) % WINDOW_BLOCKS] = 0;
			s.max = n;
		}
		const i = block % WINDOW_BLOCKS;
		const bit = 1 << n % 32;
		if (s.bits[i]! & bit) return false;
		s.bits[i] = s.bits[i]! | bit;
		s.seen = now;
		return true;
	}

	get size(): number {
		return this.senders.size;
	}

	private sweep(now: number, full: boolean): void {
		this.lastSweep = now;
		for (const [id, s] of this.senders) if (now - s.seen > this.idleMs) this.senders.delete(id);
		// Still full of live senders: forget the one inserted first (Map order) rather than grow without bound.
		if (full && this.senders.size >= this.maxSenders) this.senders.delete(this.senders.keys().next().value!);
	}
}
