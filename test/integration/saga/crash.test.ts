import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect } from "nats";
import pg from "pg";
import { channelNames } from "../../../lib/channels/jetstream.adapter.ts";
import type { ServiceBroker } from "moleculer";
import { ADMIN, asUser } from "../../support/auth.ts";
import { createBroker, NATS_URL, startNode, uniqueNamespace, type LatticeNode } from "../../support/cluster.ts";
import { sleep, waitFor } from "../../support/processes.ts";
import { assertAllOrNothing, assertStockBalances, auditOrders } from "./shop.ts";

/**
 * The orchestrator (orders) runs in its own process and is killed with SIGKILL twice: once while every saga
 * waits on its charge, once while sagas are compensating. The shop (inventory, payments) runs in another process
 * with injected delays that hold those windows open, and declines 40% of the charges.
 */

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const ns = uniqueNamespace("sagakill");
const schema = `t_${ns.replace(/-/g, "_")}`;
const common = { TRANSPORTER: NATS_URL, NAMESPACE: ns, DATABASE_URL, LATTICE_DB_SCHEMA: schema };
const ORDERS = 30;
const STOCK = 100;

let db: pg.Client;
before(async () => {
	db = new pg.Client({ connectionString: DATABASE_URL });
	await db.connect();
	await db.query(`CREATE SCHEMA ${schema}`);
});
after(async () => {
	const nc = await connect({ servers: NATS_URL });
	const jsm = await nc.jetstreamManager();
	for await (const s of jsm.streams.list()) if (s.config.name.startsWith(channelNames(ns).streamPrefix)) await jsm.streams.delete(s.config.name);
	await nc.close();
	await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
	await db.end();
});

async function sagaCount(where: string): Promise<number> {
	const { rows } = await db.query(`SELECT count(*)::int AS n FROM ${schema}.lattice_sagas WHERE ${where}`);
	return rows[0].n;
}

test("the orchestrator killed -9 between steps: after restarts every saga is completed or fully compensated", async t => {
	const nodes: LatticeNode[] = [];
	let client: ServiceBroker | null = null;
	const orchestrator = () => startNode({ nodeID: `${ns}-orch`, services: "orders", env: common });
	try {
		const faults = [
			{ match: "payments.charge", delay: { ms: 1500 } },
			{ match: "payments.charge", abort: { percent: 40, code: 402, type: "LATTICE_PAYMENT_DECLINED", retryable: false } },
			{ match: "inventory.release", delay: { ms: 1500 } }
		];
		nodes.push(await startNode({ nodeID: `${ns}-shop`, services: "inventory,payments", env: { ...common, LATTICE_FAULTS: JSON.stringify(faults) } }));
		let orch = await orchestrator();
		nodes.push(orch);
		client = await createBroker({ ...common, NODEID: `${ns}-client` });
		await client.waitForServices(["orders", "inventory"], 15_000);
		await client.call("inventory.put", { sku: "crash-kettle", name: "Kettle", price: 5, available: STOCK }, asUser(ADMIN));

		const pending = Array.from({ length: ORDERS }, () =>
			client!.call("orders.create", { sku: "crash-kettle", qty: 1 }, { ...asUser(ADMIN), timeout: 20_000 }).catch((e: Error) => e)
		);
		// Every saga has reserved and is waiting on its (delayed) charge.
		await waitFor(() => sagaCount("status = 'running' AND step = 2").then(n => n === ORDERS), 15_000, "all sagas at 'charge'");
		await orch.kill();
		assert.equal(await sagaCount("status IN ('completed', 'compensated')"), 0, "nothing finished before the kill");
		// The shop finishes the charges it was given; nobody is left to hear the answers. Half-done orders, for now.
		await sleep(2_000);
		const orphaned = (await auditOrders(db, schema)).filter(o => o.charge === "charged");
		assert.ok(orphaned.length > 0, "some charges went through while the orchestrator was dead");

		orch = await orchestrator();
		nodes.push(orch);
		// Resumed sagas retry their charge with the same key; declined ones compensate (releases are slow).
		await waitFor(() => sagaCount("status = 'compensating'").then(n => n > 0), 15_000, "a saga compensating");
		await sleep(300);
		await orch.kill();
		const caught = await sagaCount("status IN ('running', 'compensating')");

		nodes.push(await orchestrator());
		await waitFor(() => sagaCount("status IN ('running', 'compensating')").then(n => n === 0), 30_000, "every saga finished");

		const audit = await auditOrders(db, schema);
		assert.equal(audit.length, ORDERS);
		assertAllOrNothing(audit);
		const confirmed = audit.filter(o => o.status === "confirmed").length;
		assert.ok(confirmed > 0 && confirmed < ORDERS, `${confirmed} confirmed, ${ORDERS - confirmed} cancelled`);
		assert.equal(await assertStockBalances(db, schema, "crash-kettle", STOCK), STOCK - confirmed);
		// Each charge key was charged at most once: a retried step never charged twice.
		const { rows } = await db.query(`SELECT count(*)::int AS n FROM ${schema}.payments_charges WHERE status = 'charged'`);
		assert.equal(rows[0].n, confirmed);
		assert.ok(caught > 0, "the second kill interrupted unfinished sagas");
		// Each confirmed order was announced once on its channel, resumed confirms included.
		const nc = await connect({ servers: NATS_URL });
		const announced = (await (await nc.jetstreamManager()).streams.info(channelNames(ns).stream("orders.confirmed"))).state.messages;
		await nc.close();
		assert.equal(announced, confirmed);
		t.diagnostic(`orphaned charges at kill 1: ${orphaned.length}; unfinished at kill 2: ${caught}; confirmed ${confirmed}/${ORDERS}`);
		await Promise.all(pending);
	} finally {
		await client?.stop();
		await Promise.all(nodes.map(n => n.stop()));
	}
});
