import { test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker, Serializers, type Context } from "moleculer";
import { copiesOutOfBuffer, JSONSerializer } from "../../../lib/json.serializer.ts";
import { uniqueNamespace } from "../../support/cluster.ts";

const PACKET = { ver: "5", sender: "n1", id: "abc", action: "x.y", params: { a: 1, b: "héllo ✓", c: [null, true, 2.5] }, meta: {}, level: 1 };

test("writes the bytes stock JSON writes, and each reads what the other wrote", () => {
	const ours = new JSONSerializer();
	const stock = new Serializers.JSON();
	const bytes = ours.serialize(PACKET);
	assert.deepEqual(bytes, stock.serialize(PACKET));
	assert.deepEqual(ours.deserialize(stock.serialize(PACKET)), PACKET);
	assert.deepEqual(stock.deserialize(bytes), PACKET);
});

test("reads a packet that is a view into a larger buffer, multi-byte characters included", () => {
	const bytes = new JSONSerializer().serialize(PACKET);
	const big = Buffer.alloc(bytes.length + 64, 0x7b);
	bytes.copy(big, 32);
	assert.deepEqual(new JSONSerializer().deserialize(big.subarray(32, 32 + bytes.length)), PACKET);
});

test("malformed bytes throw, so the transporter drops the packet as stock JSON does", () => {
	assert.throws(() => new JSONSerializer().deserialize(Buffer.from('{"ver":')), SyntaxError);
});

test("only the JSON serializers are trusted to copy packets out of the bytes", () => {
	assert.equal(copiesOutOfBuffer(new JSONSerializer()), true);
	assert.equal(copiesOutOfBuffer(new Serializers.JSON()), true);
	assert.equal(copiesOutOfBuffer(new Serializers.JSONExt()), false);
	assert.equal(copiesOutOfBuffer(undefined), false);
});

test("a node with it and a node with stock JSON call each other", async () => {
	const ns = uniqueNamespace("json");
	const a = new ServiceBroker({ namespace: ns, nodeID: "a", transporter: "Fake", serializer: new JSONSerializer(), logger: false });
	const b = new ServiceBroker({ namespace: ns, nodeID: "b", transporter: "Fake", serializer: "JSON", logger: false });
	a.createService({ name: "ea", actions: { say: (ctx: Context<unknown>) => ({ from: "a", got: ctx.params }) } });
	b.createService({ name: "eb", actions: { say: (ctx: Context<unknown>) => ({ from: "b", got: ctx.params }) } });
	try {
		await Promise.all([a.start(), b.start()]);
		await Promise.all([a.waitForServices("eb", 2000), b.waitForServices("ea", 2000)]);
		assert.deepEqual(await a.call("eb.say", PACKET.params), { from: "b", got: PACKET.params });
		assert.deepEqual(await b.call("ea.say", PACKET.params), { from: "a", got: PACKET.params });
	} finally {
		await Promise.all([a.stop(), b.stop()]);
	}
});
