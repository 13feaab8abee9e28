import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "nats";
import pg from "pg";
import { sendToChannel } from "../../../lib/channels/channel.ts";
import { channelNames } from "../../../lib/channels/jetstream.adapter.ts";
import { createBroker, NATS_URL, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";

/**
 * Two consumer processes share group `sink` (test/support/fixtures/channel-sink.service.ts); one is killed with
 * SIGKILL in the middle of a backlog. What it had taken but not acked goes to the survivor after the ack wait
 * (and its receipts' leases), and every message has its effect exactly once.
 */

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const ns = uniqueNamespace("chkill");
const schema = `t_${ns.replace(/-/g, "_")}`;
const names = channelNames(ns);
const env = { LATTICE_CHANNELS_URL: NATS_URL, NAMESPACE: ns, DATABASE_URL, LATTICE_DB_SCHEMA: schema, LATTICE_CHANNELS_ACK_WAIT: "2" };
const TOTAL = 3000;

let db: pg.Client;
let nc: NatsConnection;
before(async () => {
	nc = await connect({ servers: NATS_URL });
	db = new pg.Client({ connectionString: DATABASE_URL });
	await db.connect();
	await db.query(`CREATE SCHEMA ${schema}`);
	await db.query(`CREATE TABLE ${schema}.sink_runs (id text NOT NULL, node text NOT NULL)`);
	await db.query(`CREATE TABLE ${schema}.sink_effects (id text PRIMARY KEY)`);
});
after(async () => {
	const jsm = await nc.jetstreamManager();
	for await (const s of jsm.streams.list()) if (s.config.name.startsWith(names.streamPrefix)) await jsm.streams.delete(s.config.name);
	await nc.close();
	await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
	await db.end();
});

const count = async (sql: string) => (await db.query(sql)).rows[0].n as number;

test("a consumer killed -9 mid-backlog loses nothing: every message has its effect once", async t => {
	const sink = "test/support/fixtures/channel-sink.service.ts";
	const nodes: LatticeNode[] = [];
	try {
		const a = await startNode({ nodeID: `${ns}-a`, services: sink, env });
		nodes.push(a, await startNode({ nodeID: `${ns}-b`, services: sink, env }));
		const producer = await createBroker({ ...env, NODEID: `${ns}-producer` });
		try {
			for (let i = 0; i < TOTAL; i += 500) {
				await Promise.all(Array.from({ length: 500 }, (_, j) => sendToChannel(producer, "test.sink", { n: i + j }, { id: `m-${i + j}` })));
			}
		} finally {
			await producer.stop();
		}
		await waitFor(() => count(`SELECT count(*)::int AS n FROM ${schema}.sink_runs WHERE node = '${ns}-a'`).then(n => n > 300), 30_000, "a at work");
		await a.kill();

		const jsm = await nc.jetstreamManager();
		await waitFor(
			async () => {
				const c = await jsm.consumers.info(names.stream("test.sink"), "sink");
				return c.num_pending === 0 && c.num_ack_pending === 0 && (await count(`SELECT count(*)::int AS n FROM ${schema}.sink_effects`)) === TOTAL;
			},
			60_000,
			"every message handled and acked",
			250
		);
		assert.equal(await count(`SELECT count(DISTINCT id)::int AS n FROM ${schema}.sink_effects WHERE id ~ '^m-[0-9]+$'`), TOTAL);
		const runs = await count(`SELECT count(*)::int AS n FROM ${schema}.sink_runs`);
		const both = await count(`SELECT count(*)::int AS n FROM (SELECT id FROM ${schema}.sink_runs GROUP BY id HAVING count(DISTINCT node) = 2) x`);
		const receipts = await count(`SELECT count(*)::int AS n FROM ${schema}.lattice_channel_receipts WHERE grp = 'sink' AND done`);
		t.diagnostic(`handler runs ${runs} for ${TOTAL} messages; ${both} started on the killed member and finished on the other`);
		assert.ok(both > 0, "some messages were in the killed member's hands and were handed to the survivor");
		assert.ok(runs - TOTAL <= 64, "only messages in flight at the kill ran twice");
		assert.equal(receipts, TOTAL);
	} finally {
		await Promise.all(nodes.map(n => n.stop()));
	}
});
