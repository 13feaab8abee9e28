import { test } from "node:test";
import { Readable } from "node:stream";
import assert from "node:assert/strict";
import { ServiceBroker, type Context } from "moleculer";
import { Registry } from "prom-client";
import { decodeBatch, encodeBatch, isBatch, PacketBatchingMiddleware } from "../../../middlewares/packet-batching.middleware.ts";
import { PacketProtectionMiddleware } from "../../../middlewares/packet-protection.middleware.ts";
import { RELEASES_DATA } from "../../../lib/packet-seal.ts";
import { metricValue, uniqueNamespace } from "../../support/cluster.ts";

type Meta = { packet: { type: string } };
type Send = (topic: string, data: Buffer, meta: Meta) => unknown;
type Receive = (cmd: string, data: Buffer) => unknown;

const tick = () => new Promise(r => setImmediate(r));

function hooks(opts: Parameters<typeof PacketBatchingMiddleware>[0] = {}) {
	const registry = new Registry();
	const mw = PacketBatchingMiddleware({ registry, ...opts }) as unknown as {
		created(b: unknown): void;
		transporterSend(next: Send): Send;
		transporterReceive(next: Receive): Receive;
	};
	mw.created({ getLogger: () => ({ warn() {} }) });
	const wire: Array<{ topic: string; data: Buffer; type: string }> = [];
	const send = mw.transporterSend((topic, data, meta) => {
		wire.push({ topic, data, type: meta.packet.type });
		return Promise.resolve();
	});
	const delivered: Array<{ cmd: string; data: string }> = [];
	const receive = mw.transporterReceive((cmd, data) => void delivered.push({ cmd, data: data.toString() }));
	return { registry, send, receive, wire, delivered };
}

const packet = (type: string) => ({ packet: { type } });

/** A broker over the in-memory transporter with packet protection and batching, as Lattice's config orders them. */
function sealingBroker(namespace: string, nodeID: string, keyByte: number, registry = new Registry()): ServiceBroker {
	return new ServiceBroker({
		namespace,
		nodeID,
		transporter: "Fake",
		logger: false,
		middlewares: [PacketProtectionMiddleware({ keys: { current: Buffer.alloc(32, keyByte) }, registry }), PacketBatchingMiddleware({ registry })]
	});
}

test("a frame round-trips its packets in order; anything malformed decodes to null", () => {
	const parts = [Buffer.from('{"a":1}'), Buffer.from("x".repeat(70_000)), Buffer.from("{}")];
	const frame = encodeBatch(parts);
	assert.ok(isBatch(frame));
	assert.deepEqual(decodeBatch(frame)?.map(String), parts.map(String));
	assert.ok(!isBatch(Buffer.from('{"ver":"5"}')));

	const truncated = frame.subarray(0, frame.length - 1);
	const zeroLength = Buffer.concat([encodeBatch([Buffer.from("{}")]), Buffer.from([0, 0, 0, 0])]);
	const partialLength = Buffer.concat([encodeBatch([Buffer.from("{}")]), Buffer.from([0, 0])]);
	const otherVersion = Buffer.from(frame);
	otherVersion[3] = 2;
	const empty = frame.subarray(0, 4);
	for (const bad of [truncated, zeroLength, partialLength, otherVersion, empty]) assert.equal(decodeBatch(bad), null);
});

test("packets to one subject in one turn leave as one frame; a lone packet leaves as it is", async () => {
	const { send, wire, registry } = hooks();
	const sent = [1, 2, 3].map(i => send("MOL.REQ.b", Buffer.from(`{"i":${i}}`), packet("REQ")));
	send("MOL.RES.c", Buffer.from('{"r":1}'), packet("RES"));
	assert.equal(wire.length, 0, "nothing leaves before the end of the turn");
	await tick();
	await Promise.all(sent);

	assert.equal(wire.length, 2);
	assert.equal(wire[0]!.topic, "MOL.REQ.b");
	assert.deepEqual(decodeBatch(wire[0]!.data)?.map(String), ['{"i":1}', '{"i":2}', '{"i":3}']);
	assert.equal(wire[1]!.topic, "MOL.RES.c");
	assert.equal(wire[1]!.data.toString(), '{"r":1}', "a single packet is not framed");
	const text = await registry.metrics();
	assert.equal(metricValue(text, "lattice_packet_batches_total", { direction: "sent" }), 1);
	assert.equal(metricValue(text, "lattice_packet_batched_total", { direction: "sent" }), 3);
});

test("a control packet flushes what is pending first, so nothing overtakes it", async () => {
	const { send, wire } = hooks();
	send("MOL.EVENT.b", Buffer.from('{"e":1}'), packet("EVENT"));
	send("MOL.EVENT.b", Buffer.from('{"e":2}'), packet("EVENT"));
	send("MOL.DISCONNECT", Buffer.from('{"bye":1}'), packet("DISCONNECT"));
	assert.deepEqual(
		wire.map(w => w.type),
		["EVENT", "DISCONNECT"],
		"sent synchronously, in order"
	);
	assert.equal(decodeBatch(wire[0]!.data)?.length, 2);
	await tick();
	assert.equal(wire.length, 2, "nothing left over");
});

test("a batch never grows past maxBytes; a bigger packet goes alone", async () => {
	const { send, wire } = hooks({ maxBytes: 100 });
	for (let i = 0; i < 5; i++) send("MOL.REQ.b", Buffer.from("a".repeat(40)), packet("REQ"));
	send("MOL.REQ.b", Buffer.from("b".repeat(200)), packet("REQ"));
	await tick();
	const packets = wire.flatMap(w => (isBatch(w.data) ? decodeBatch(w.data)!.map(String) : [w.data.toString()]));
	assert.deepEqual(packets, [...Array(5).fill("a".repeat(40)), "b".repeat(200)], "every packet once, in order");
	assert.ok(wire.filter(w => isBatch(w.data)).every(w => w.data.length <= 100));
});

test("disabled, every packet is sent at once and alone", () => {
	const { send, wire } = hooks({ enabled: false });
	send("MOL.REQ.b", Buffer.from("{}"), packet("REQ"));
	send("MOL.REQ.b", Buffer.from("{}"), packet("REQ"));
	assert.equal(wire.length, 2);
	assert.ok(wire.every(w => !isBatch(w.data)));
});

test("a failed flush rejects the promises of its packets", async () => {
	const mw = PacketBatchingMiddleware() as unknown as { transporterSend(next: Send): Send };
	const send = mw.transporterSend(() => Promise.reject(new Error("link down")));
	const a = send("MOL.REQ.b", Buffer.from("{}"), packet("REQ")) as Promise<void>;
	const b = send("MOL.REQ.b", Buffer.from("{}"), packet("REQ")) as Promise<void>;
	await assert.rejects(a, /link down/);
	await assert.rejects(b, /link down/);
});

test("received frames are unpacked in order; malformed frames are dropped and counted; plain packets pass", async () => {
	const { receive, delivered, registry } = hooks();
	receive("REQ", encodeBatch([Buffer.from("one"), Buffer.from("two")]));
	receive("REQ", Buffer.from("plain"));
	const bad = encodeBatch([Buffer.from("three")]);
	receive("REQ", bad.subarray(0, bad.length - 2));
	assert.deepEqual(delivered.map(d => d.data), ["one", "two", "plain"]);
	const text = await registry.metrics();
	assert.equal(metricValue(text, "lattice_packet_batches_total", { direction: "malformed" }), 1);
	assert.equal(metricValue(text, "lattice_packet_batched_total", { direction: "received" }), 2);
});

test("brokers with protection and batching answer 200 concurrent calls and 50 events; the calls travel in batches", async () => {
	const ns = uniqueNamespace("batch");
	const make = (nodeID: string) => {
		const registry = new Registry();
		return { broker: sealingBroker(ns, nodeID, 9, registry), registry };
	};
	const a = make("a");
	const b = make("b");
	const seen: number[] = [];
	a.broker.createService({
		name: "math",
		actions: { double: (ctx: Context<{ n: number }>) => ctx.params.n * 2 },
		events: { "math.seen": (ctx: Context<{ n: number }>) => void seen.push(ctx.params.n) }
	});
	try {
		await Promise.all([a.broker.start(), b.broker.start()]);
		await b.broker.waitForServices("math", 5000);
		const results = await Promise.all(Array.from({ length: 200 }, (_, n) => b.broker.call("math.double", { n })));
		assert.deepEqual(results, Array.from({ length: 200 }, (_, n) => n * 2));
		for (let n = 0; n < 50; n++) b.broker.emit("math.seen", { n });
		const deadline = Date.now() + 2000;
		while (seen.length < 50 && Date.now() < deadline) await new Promise(r => setTimeout(r, 10));
		assert.deepEqual(seen, Array.from({ length: 50 }, (_, n) => n), "events arrive once each, in order");
		const received = metricValue(await a.registry.metrics(), "lattice_packet_batched_total", { direction: "received" });
		assert.ok(received >= 200, `requests arrived in batches (${received} batched packets)`);
	} finally {
		await Promise.all([a.broker.stop(), b.broker.stop()]);
	}
});

test("a stream crosses batching, sealing nodes whole and in order, both ways", async () => {
	const ns = uniqueNamespace("batch-stream");
	const make = (nodeID: string) => sealingBroker(ns, nodeID, 3);
	const a = make("a");
	const b = make("b");
	a.createService({
		name: "files",
		actions: {
			// Reads the whole upload, answers with a stream of it reversed chunk by chunk.
			async echo(ctx: Context) {
				const chunks: Buffer[] = [];
				for await (const c of ctx.stream as Readable) chunks.push(c as Buffer);
				return Readable.from(chunks.reverse());
			}
		}
	});
	try {
		await Promise.all([a.start(), b.start()]);
		await b.waitForServices("files", 5000);
		const sent = Array.from({ length: 200 }, (_, i) => Buffer.alloc(1000 + i, i % 251));
		// Moleculer sends the next chunk once the last one's publish has resolved, so a stream rides one chunk per
		// turn: batching must neither hold it back nor reorder it.
		const reply = (await b.call("files.echo", null, { stream: Readable.from(sent) })) as Readable;
		const got: Buffer[] = [];
		for await (const c of reply) got.push(c as Buffer);
		assert.ok(Buffer.concat(got).equals(Buffer.concat([...sent].reverse())), "every byte, in order");

	} finally {
		await Promise.all([a.stop(), b.stop()]);
	}
});

test("a node with batching off and one with it on answer each other's concurrent calls", async () => {
	const ns = uniqueNamespace("batch-mixed");
	const key = { current: Buffer.alloc(32, 5) };
	const make = (nodeID: string, enabled: boolean) =>
		new ServiceBroker({
			namespace: ns,
			nodeID,
			transporter: "Fake",
			logger: false,
			middlewares: [PacketProtectionMiddleware({ keys: key }), PacketBatchingMiddleware({ enabled })]
		});
	const on = make("on", true);
	const off = make("off", false);
	for (const b of [on, off]) b.createService({ name: `math-${b.nodeID}`, actions: { inc: (ctx: Context<{ n: number }>) => ctx.params.n + 1 } });
	try {
		await Promise.all([on.start(), off.start()]);
		await Promise.all([on.waitForServices("math-off", 5000), off.waitForServices("math-on", 5000)]);
		const n = Array.from({ length: 100 }, (_, i) => i);
		assert.deepEqual(await Promise.all(n.map(i => on.call("math-off.inc", { n: i }))), n.map(i => i + 1));
		assert.deepEqual(await Promise.all(n.map(i => off.call("math-on.inc", { n: i }))), n.map(i => i + 1));
	} finally {
		await Promise.all([on.stop(), off.stop()]);
	}
});

test("frames share one buffer only below a layer that is done with them on return, and each leaves intact", async () => {
	for (const releases of [true, false]) {
		const mw = PacketBatchingMiddleware({ registry: new Registry() }) as unknown as { created(b: unknown): void; transporterSend(next: Send): Send };
		mw.created({ getLogger: () => ({ warn() {} }) });
		const seen: Array<{ topic: string; data: Buffer; copy: Buffer }> = [];
		const below: Send = (topic, data) => {
			seen.push({ topic, data, copy: Buffer.from(data) });
			return Promise.resolve();
		};
		const send = mw.transporterSend(releases ? Object.assign(below, { [RELEASES_DATA]: true }) : below);
		const sent: Record<string, string[]> = { "MOL.REQ.a": [], "MOL.REQ.b": [] };
		for (let i = 0; i < 6; i++) {
			const topic = i % 2 ? "MOL.REQ.b" : "MOL.REQ.a";
			const body = `{"n":${i},"pad":"${"x".repeat(1000 * (i + 1))}"}`;
			sent[topic]!.push(body);
			void send(topic, Buffer.from(body), packet("REQ"));
		}
		await tick();
		assert.equal(seen.length, 2);
		for (const s of seen) {
			assert.deepEqual(decodeBatch(s.copy)?.map(p => p.toString()), sent[s.topic], `${s.topic} as it left (releases: ${releases})`);
		}
		const [x, y] = [seen[0]!.data, seen[1]!.data];
		assert.equal(x.buffer === y.buffer && x.byteOffset === y.byteOffset, releases, "both frames written in one place exactly when the layer below releases them");
		if (!releases) for (const s of seen) assert.deepEqual(s.data, s.copy, "a frame the layer below may keep is never written over");
	}
});

test("sealing brokers answer concurrent calls spread over two servers: frames to both leave in one turn, intact", async () => {
	const ns = uniqueNamespace("batch2");
	const make = (nodeID: string) => sealingBroker(ns, nodeID, 7);
	const servers = [make("s1"), make("s2")];
	const client = make("c");
	for (const s of servers) s.createService({ name: "echo", actions: { back: (ctx: Context<{ n: number; pad: string }>) => ({ ...ctx.params, by: ctx.nodeID }) } });
	try {
		await Promise.all([...servers, client].map(b => b.start()));
		await client.waitForServices("echo", 5000);
		const params = Array.from({ length: 300 }, (_, n) => ({ n, pad: "y".repeat(n % 97) }));
		const results = (await Promise.all(params.map(p => client.call("echo.back", p)))) as Array<{ n: number; pad: string }>;
		assert.deepEqual(
			results.map(r => ({ n: r.n, pad: r.pad })),
			params
		);
	} finally {
		await Promise.all([...servers, client].map(b => b.stop()));
	}
});
