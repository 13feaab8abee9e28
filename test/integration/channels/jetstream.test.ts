import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "nats";
import pg from "pg";
import type { ServiceBroker, ServiceSchema } from "moleculer";
import { channelNames } from "../../../lib/channels/jetstream.adapter.ts";
import { DLQ_HEADERS, sendToChannel, type ChannelMessage, type ChannelsSchema } from "../../../lib/channels/channel.ts";
import { createBroker, metricValue, NATS_URL, uniqueNamespace } from "../../support/cluster.ts";
import { sleep, waitFor } from "../../support/processes.ts";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const ns = uniqueNamespace("ch");
const schema = `t_${ns.replace(/-/g, "_")}`;
const names = channelNames(ns);
// A short duplicate window so the test can also resend after it, where only the receipts catch duplicates.
const WINDOW = 5;
const env = { LATTICE_CHANNELS_URL: NATS_URL, DATABASE_URL, LATTICE_DB_SCHEMA: schema, NAMESPACE: ns, LATTICE_CHANNELS_DUPLICATE_WINDOW: String(WINDOW) };

type WithChannels = ServiceSchema & { channels: ChannelsSchema };

let nc: NatsConnection;
let admin: pg.Client;
before(async () => {
	nc = await connect({ servers: NATS_URL });
	admin = new pg.Client({ connectionString: DATABASE_URL });
	await admin.connect();
});
after(async () => {
	const jsm = await nc.jetstreamManager();
	for await (const s of jsm.streams.list()) {
		if (s.config.name.startsWith(names.streamPrefix)) await jsm.streams.delete(s.config.name);
	}
	await nc.close();
	await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
	await admin.end();
});

async function registryCount(brokers: ServiceBroker[], outcome: string, channel: string): Promise<number> {
	let n = 0;
	for (const b of brokers) {
		const text = await (b.options as { metricsRegistry: { metrics(): Promise<string> } }).metricsRegistry.metrics();
		n += metricValue(text, "lattice_channel_messages_total", { channel, outcome });
	}
	return n;
}

test("10,000 messages sent while the whole consumer group is down are each handled exactly once when it comes back", async t => {
	const channel = "test.tally";
	const handled = new Map<string, number>();
	const perNode = new Map<string, number>();
	const tally = (node: string): WithChannels => ({
		name: "tally",
		channels: {
			[channel]: {
				maxInFlight: 64,
				handler(_ctx, msg: ChannelMessage) {
					handled.set(msg.id, (handled.get(msg.id) ?? 0) + 1);
					perNode.set(node, (perNode.get(node) ?? 0) + 1);
				}
			}
		}
	});
	// The group exists (its durable consumer is on the server), then every member goes away.
	for (const node of ["a", "b"]) await (await createBroker({ ...env, NODEID: `${ns}-${node}` }, [tally(node)])).stop();

	const producer = await createBroker({ ...env, NODEID: `${ns}-producer` });
	const TOTAL = 10_000;
	const ids = Array.from({ length: TOTAL }, (_, i) => `msg-${i}`);
	const sendAll = async (list: string[]) => {
		const results = [];
		for (let i = 0; i < list.length; i += 500) {
			results.push(...(await Promise.all(list.slice(i, i + 500).map(id => sendToChannel(producer, channel, { n: id }, { id })))));
		}
		return results;
	};
	try {
		const first = await sendAll(ids);
		assert.equal(first.filter(r => r.duplicate).length, 0);
		// A producer retrying its last batch inside the duplicate window: the stream stores nothing new.
		const retried = await sendAll(ids.slice(-500));
		assert.equal(retried.filter(r => r.duplicate).length, 500);
		// Retrying after the window: stored again, so only the group's receipts stand between it and a second run.
		await sleep(WINDOW * 1000 + 500);
		const late = await sendAll(ids.slice(0, 500));
		assert.equal(late.filter(r => r.duplicate).length, 0);
	} finally {
		await producer.stop();
	}
	const jsm = await nc.jetstreamManager();
	assert.equal((await jsm.streams.info(names.stream(channel))).state.messages, TOTAL + 500);
	assert.equal(handled.size, 0, "nothing was handled while the group was down");

	const back = Date.now();
	const members = [
		await createBroker({ ...env, NODEID: `${ns}-a2` }, [tally("a")]),
		await createBroker({ ...env, NODEID: `${ns}-b2` }, [tally("b")])
	];
	try {
		await waitFor(
			async () => {
				const c = await jsm.consumers.info(names.stream(channel), "tally");
				return handled.size === TOTAL && c.num_pending === 0 && c.num_ack_pending === 0;
			},
			120_000,
			"the backlog to be handled and acked",
			250
		);
		t.diagnostic(`backlog of ${TOTAL + 500} drained in ${Date.now() - back} ms by two members (${[...perNode].map(([k, v]) => `${k}: ${v}`).join(", ")})`);
		const counts = [...handled.values()];
		assert.equal(counts.filter(n => n !== 1).length, 0, "no message was handled twice");
		assert.deepEqual(new Set(handled.keys()), new Set(ids));
		assert.ok((perNode.get("a") ?? 0) > 0 && (perNode.get("b") ?? 0) > 0, `both members took a share: ${JSON.stringify([...perNode])}`);
		assert.equal(await registryCount(members, "handled", channel), TOTAL);
		assert.equal(await registryCount(members, "duplicate", channel), 500, "the 500 late resends were recognised by their receipts");
		const { rows } = await admin.query(`SELECT count(*)::int AS n FROM ${schema}.lattice_channel_receipts WHERE grp = 'tally' AND done`);
		assert.equal(rows[0].n, TOTAL);
	} finally {
		await Promise.all(members.map(m => m.stop()));
	}
});

test("a poison message is dead-lettered after maxDeliver tries while the messages behind it are handled", async () => {
	const channel = "test.picky";
	let attempts = 0;
	const good: { id: string; at: number }[] = [];
	const dead: { msg: ChannelMessage; at: number }[] = [];
	const picky: WithChannels = {
		name: "picky",
		channels: {
			[channel]: {
				maxDeliver: 3,
				backoff: [300, 600],
				handler(ctx, msg: ChannelMessage) {
					if ((ctx.params as { poison?: boolean }).poison) {
						attempts++;
						throw new Error("cannot digest this");
					}
					good.push({ id: msg.id, at: Date.now() });
				}
			},
			[`${channel}.DLQ`](_ctx, msg: ChannelMessage) {
				dead.push({ msg, at: Date.now() });
			}
		}
	};
	const broker = await createBroker({ ...env, NODEID: `${ns}-picky` }, [picky]);
	try {
		await sendToChannel(broker, channel, { poison: true }, { id: "poison-1" });
		for (let i = 0; i < 50; i++) await sendToChannel(broker, channel, { i }, { id: `ok-${i}` });
		await waitFor(() => dead.length === 1, 20_000, "the dead letter");
		await sleep(300);
		assert.equal(attempts, 3, "tried exactly maxDeliver times");
		assert.equal(dead.length, 1);
		assert.equal(good.length, 50);
		assert.ok(Math.max(...good.map(g => g.at)) <= dead[0]!.at, "the messages behind the poison did not wait for it");
		const d = dead[0]!.msg;
		assert.deepEqual(d.payload, { poison: true });
		assert.equal(d.headers[DLQ_HEADERS.id], "poison-1");
		assert.equal(d.headers[DLQ_HEADERS.channel], channel);
		assert.equal(d.headers[DLQ_HEADERS.group], "picky");
		assert.equal(d.headers[DLQ_HEADERS.deliveries], "3");
		assert.match(d.headers[DLQ_HEADERS.error] ?? "", /cannot digest this/);
		assert.equal(await registryCount([broker], "dead_lettered", channel), 1);
		assert.equal(await registryCount([broker], "retried", channel), 2);
		const c = await (await nc.jetstreamManager()).consumers.info(names.stream(channel), "picky");
		assert.equal(c.num_pending + c.num_ack_pending, 0, "the poison message left the group");
	} finally {
		await broker.stop();
	}
});

test("with a NATS TRANSPORTER and no LATTICE_CHANNELS_URL, channels go to JetStream on that server", async () => {
	const broker = await createBroker({ TRANSPORTER: NATS_URL, NAMESPACE: ns, NODEID: `${ns}-t` });
	try {
		assert.equal((await sendToChannel(broker, "test.via-transporter", { x: 1 }, { id: "v1" })).duplicate, false);
		const info = await (await nc.jetstreamManager()).streams.info(names.stream("test.via-transporter"));
		assert.equal(info.state.messages, 1);
		assert.equal(info.config.duplicate_window, 120_000_000_000, "the default duplicate window: 2 minutes");
	} finally {
		await broker.stop();
	}
});
