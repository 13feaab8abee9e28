import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import type { Errors } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import {
	CIPHERS,
	HEADER_BYTES,
	PacketSeal,
	ReplayGuard,
	ScopeKind,
	TAG_BYTES,
	defaultCipher,
	parseClusterKey,
	scopeBytes,
	sodium,
	type OpenResult
} from "../../../lib/packet-seal.ts";

const KEY_A = Buffer.alloc(32, 0xa1);
const KEY_B = Buffer.alloc(32, 0xb2);
const SCOPE = scopeBytes("ns", "REQ", "node-2");
const DATA = Buffer.from(JSON.stringify({ action: "orders.create", params: { card: "4111-1111-1111-1111" } }));

/** A receiver that expects `scope` for targeted packets and nothing else. */
const only = (scope: Buffer) => (kind: number) => (kind === ScopeKind.targeted ? scope : null);

function reason(r: OpenResult): string {
	return r.ok ? "ok" : r.reason;
}

for (const cipher of CIPHERS) {
	test(`${cipher}: a sealed packet opens where it was addressed and reveals nothing of the payload`, () => {
		const sender = new PacketSeal({ keys: { current: KEY_A }, cipher });
		const receiver = new PacketSeal({ keys: { current: KEY_A } });
		const sealed = sender.seal(SCOPE, ScopeKind.targeted, DATA);
		assert.equal(sealed.length, HEADER_BYTES + DATA.length + TAG_BYTES);
		assert.ok(!sealed.includes(Buffer.from("orders.create")) && !sealed.includes(Buffer.from("4111")));
		const r = receiver.open(sealed, only(SCOPE));
		assert.ok(r.ok);
		assert.deepEqual(r.data, DATA);
		assert.equal(r.key, "current");
	});
}

// sodium-native is an optional dependency: where it does not load, the libsodium cases have nothing to check.
const noSodium = sodium() ? false : "sodium-native does not load here";

test("ChaCha20-Poly1305 through libsodium and through node:crypto open each other's packets", { skip: noSodium }, () => {
	const viaSodium = new PacketSeal({ keys: { current: KEY_A }, cipher: "chacha20-poly1305" });
	const viaNode = new PacketSeal({ keys: { current: KEY_A }, cipher: "chacha20-poly1305", useSodium: false });
	for (const [from, to] of [
		[viaSodium, viaNode],
		[viaNode, viaSodium]
	] as const) {
		for (const data of [DATA, Buffer.alloc(1, 7), crypto.randomBytes(70_000)]) {
			const r = to.open(from.seal(SCOPE, ScopeKind.targeted, data), only(SCOPE));
			assert.ok(r.ok, reason(r));
			assert.deepEqual(r.data, data);
		}
	}
});

test("libsodium opens into the buffer it is given when it fits, and into a new one when it does not", { skip: noSodium }, () => {
	const sender = new PacketSeal({ keys: { current: KEY_A }, cipher: "chacha20-poly1305" });
	const receiver = new PacketSeal({ keys: { current: KEY_A } });
	const into = Buffer.alloc(DATA.length + 10);
	const fits = receiver.open(sender.seal(SCOPE, ScopeKind.targeted, DATA), only(SCOPE), into);
	assert.ok(fits.ok);
	assert.deepEqual(fits.data, DATA);
	assert.equal(fits.data.buffer, into.buffer);
	const small = Buffer.alloc(DATA.length - 1);
	const tooSmall = receiver.open(sender.seal(SCOPE, ScopeKind.targeted, DATA), only(SCOPE), small);
	assert.ok(tooSmall.ok);
	assert.deepEqual(tooSmall.data, DATA);
	assert.notEqual(tooSmall.data.buffer, small.buffer);
	// A forgery leaves nothing readable in the buffer: libsodium checks the tag before it writes.
	const forged = sender.seal(SCOPE, ScopeKind.targeted, DATA);
	forged[forged.length - 1]! ^= 1;
	into.fill(0);
	assert.equal(reason(receiver.open(forged, only(SCOPE), into)), "forged");
	assert.ok(into.every(b => b === 0));
});

test("without a cipher named, a node seals with ChaCha20-Poly1305 when libsodium loads, else AES-256-GCM", () => {
	const sealed = new PacketSeal({ keys: { current: KEY_A } }).seal(SCOPE, ScopeKind.targeted, DATA);
	assert.equal(defaultCipher(), sodium() ? "chacha20-poly1305" : "aes-256-gcm");
	assert.equal(sealed[0], defaultCipher() === "chacha20-poly1305" ? 0xa2 : 0xa1);
	assert.equal(new PacketSeal({ keys: { current: KEY_A }, useSodium: false }).seal(SCOPE, ScopeKind.targeted, DATA)[0], 0xa1);
});

test("a packet moved to another node, packet type, namespace or scope kind does not open", () => {
	const sender = new PacketSeal({ keys: { current: KEY_A } });
	const receiver = new PacketSeal({ keys: { current: KEY_A } });
	for (const scope of [scopeBytes("ns", "REQ", "node-3"), scopeBytes("ns", "EVENT", "node-2"), scopeBytes("other", "REQ", "node-2")]) {
		assert.equal(reason(receiver.open(sender.seal(SCOPE, ScopeKind.targeted, DATA), only(scope))), "forged");
	}
	// Sealed as a broadcast, presented as targeted with the same scope bytes: the kind byte is authenticated.
	const broadcast = sender.seal(SCOPE, ScopeKind.broadcast, DATA);
	broadcast[2] = ScopeKind.targeted;
	assert.equal(reason(receiver.open(broadcast, only(SCOPE))), "forged");
});

for (const [backend, useSodium] of [
	["node:crypto", false],
	["libsodium", true]
] as const) {
	for (const cipher of CIPHERS) {
		test(`${cipher} through ${backend}: flipping any single byte of header, ciphertext or tag is caught`, { skip: useSodium && noSodium }, () => {
			const sender = new PacketSeal({ keys: { current: KEY_A }, cipher, useSodium });
			const receiver = new PacketSeal({ keys: { current: KEY_A }, useSodium });
			const sealed = sender.seal(SCOPE, ScopeKind.targeted, DATA);
			const outcomes = new Set<string>();
			for (let i = 0; i < sealed.length; i++) {
				const copy = Buffer.from(sealed);
				copy[i]! ^= 0x01;
				const r = receiver.open(copy, only(SCOPE));
				assert.ok(!r.ok, `byte ${i} flipped still opened`);
				outcomes.add(r.reason);
			}
			assert.ok(outcomes.has("forged"));
		});
	}
}

test("the same packet is accepted once; a copy is refused as replayed", () => {
	const sender = new PacketSeal({ keys: { current: KEY_A } });
	const receiver = new PacketSeal({ keys: { current: KEY_A } });
	const sealed = sender.seal(SCOPE, ScopeKind.targeted, DATA);
	assert.equal(reason(receiver.open(sealed, only(SCOPE))), "ok");
	assert.equal(reason(receiver.open(Buffer.from(sealed), only(SCOPE))), "replayed");
	// Another receiver has not seen it: replay protection is per receiver, and the scope keeps the packet from
	// opening on any other node.
	assert.equal(reason(new PacketSeal({ keys: { current: KEY_A } }).open(sealed, only(SCOPE))), "ok");
});

test("packets older or newer than the skew window are stale", () => {
	let now = 1_800_000_000_000;
	const sender = new PacketSeal({ keys: { current: KEY_A }, now: () => now });
	const receiver = new PacketSeal({ keys: { current: KEY_A }, maxSkewMs: 30_000, now: () => now });
	const sealed = sender.seal(SCOPE, ScopeKind.targeted, DATA);
	now += 30_001;
	assert.equal(reason(receiver.open(sealed, only(SCOPE))), "stale");
	now -= 60_002;
	assert.equal(reason(receiver.open(sealed, only(SCOPE))), "stale");
	now += 30_001;
	assert.equal(reason(receiver.open(sealed, only(SCOPE))), "ok");
});

test("key rollover: the previous key still opens, a node without the new key cannot", () => {
	const oldNode = new PacketSeal({ keys: { current: KEY_A } });
	const rolled = new PacketSeal({ keys: { current: KEY_B, previous: KEY_A } });
	const fromOld = oldNode.seal(SCOPE, ScopeKind.targeted, DATA);
	const fromRolled = rolled.seal(SCOPE, ScopeKind.targeted, DATA);
	const opened = rolled.open(fromOld, only(SCOPE));
	assert.ok(opened.ok && opened.key === "previous");
	const own = new PacketSeal({ keys: { current: KEY_B } }).open(fromRolled, only(SCOPE));
	assert.ok(own.ok && own.key === "current");
	// These two keys draw different ids, so the old node knows at once it lacks the key.
	assert.notEqual(fromOld[1], fromRolled[1]);
	assert.equal(reason(oldNode.open(fromRolled, only(SCOPE))), "unknown_key");
});

test("a wrong key with a colliding key id is refused as forged", () => {
	const sender = new PacketSeal({ keys: { current: KEY_A } });
	const sealed = sender.seal(SCOPE, ScopeKind.targeted, DATA);
	// Find another key whose one-byte id is the same as KEY_A's.
	let other: Buffer;
	let probe: Buffer;
	do {
		other = crypto.randomBytes(32);
		probe = new PacketSeal({ keys: { current: other } }).seal(SCOPE, ScopeKind.targeted, DATA);
	} while (probe[1] !== sealed[1]);
	assert.equal(reason(new PacketSeal({ keys: { current: other } }).open(sealed, only(SCOPE))), "forged");
});

test("plain serializer output is unprotected; short or unknown-kind envelopes are malformed", () => {
	const receiver = new PacketSeal({ keys: { current: KEY_A } });
	assert.equal(reason(receiver.open(Buffer.from('{"ver":"5","sender":"x"}'), only(SCOPE))), "unprotected");
	assert.equal(reason(receiver.open(Buffer.alloc(0), only(SCOPE))), "malformed");
	const sealed = new PacketSeal({ keys: { current: KEY_A } }).seal(SCOPE, ScopeKind.targeted, DATA);
	assert.equal(reason(receiver.open(sealed.subarray(0, HEADER_BYTES + TAG_BYTES - 1), only(SCOPE))), "malformed");
	const odd = Buffer.from(sealed);
	odd[2] = 9;
	assert.equal(reason(receiver.open(odd, only(SCOPE))), "malformed");
});

test("nonces never repeat within a process, and two processes start far apart", () => {
	const a = new PacketSeal({ keys: { current: KEY_A } });
	const b = new PacketSeal({ keys: { current: KEY_A } });
	const seen = new Set<string>();
	for (const s of [a, b]) {
		for (let i = 0; i < 5000; i++) seen.add(s.seal(SCOPE, ScopeKind.broadcast, DATA).subarray(3, 15).toString("hex"));
	}
	assert.equal(seen.size, 10_000);
});

test("the replay window accepts late packets once, refuses far-behind ones and bounds its senders", () => {
	const g = new ReplayGuard(2, 60_000);
	assert.ok(g.accept(1, 1000, 0));
	assert.ok(g.accept(1, 990, 0), "late but inside the window");
	assert.ok(!g.accept(1, 990, 0));
	assert.ok(g.accept(1, 100_000, 0));
	assert.ok(!g.accept(1, 1001, 0), "far behind the highest seen");
	assert.ok(g.accept(1, 100_000 - 4000, 0));
	assert.ok(g.accept(2, 5, 0));
	assert.ok(g.accept(3, 5, 0));
	assert.equal(g.size, 2);
	// Idle senders are swept once their packets would be stale anyway.
	assert.ok(g.accept(4, 1, 120_001));
	assert.equal(g.size, 1);
});

test("cluster keys: base64, base64url and hex of >= 32 bytes; anything shorter or not an encoding is a config error", () => {
	const raw = crypto.randomBytes(32);
	assert.deepEqual(parseClusterKey(raw.toString("base64"), "K"), raw);
	assert.deepEqual(parseClusterKey(raw.toString("base64url"), "K"), raw);
	assert.deepEqual(parseClusterKey(raw.toString("hex"), "K"), raw);
	assert.deepEqual(parseClusterKey(` ${raw.toString("base64")}\n`, "K"), raw);
	for (const bad of [crypto.randomBytes(31).toString("base64"), "correct horse battery staple", crypto.randomBytes(16).toString("hex")]) {
		assert.throws(
			() => parseClusterKey(bad, "LATTICE_CLUSTER_KEY"),
			(err: Errors.MoleculerError) =>
				err.type === ErrorType.CONFIG_INVALID && /LATTICE_CLUSTER_KEY/.test(err.message) && /openssl rand -base64 32/.test(err.message)
		);
	}
});
