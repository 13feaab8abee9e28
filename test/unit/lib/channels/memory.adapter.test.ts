import { test } from "node:test";
import assert from "node:assert/strict";
import type { ServiceSchema } from "moleculer";
import { backoffDelay, DLQ_HEADERS, sendToChannel, type ChannelMessage, type ChannelsSchema } from "../../../../lib/channels/channel.ts";
import { createBroker } from "../../../support/cluster.ts";
import { waitFor } from "../../../support/processes.ts";

type WithChannels = ServiceSchema & { channels: ChannelsSchema };

test("backoff: one delay per retry, the last one repeats", () => {
	assert.equal(backoffDelay([100, 500], 1), 100);
	assert.equal(backoffDelay([100, 500], 2), 500);
	assert.equal(backoffDelay([100, 500], 7), 500);
	assert.equal(backoffDelay([], 3), 0);
});

test("without NATS: every group gets every message, members of a group share them, each id runs once per group", async () => {
	const seen: { group: string; member: string; id: string }[] = [];
	const member = (name: string, group: string): WithChannels => ({
		name,
		channels: {
			"orders.placed": {
				group,
				handler(_ctx, msg: ChannelMessage) {
					seen.push({ group: msg.group, member: name, id: msg.id });
				}
			}
		}
	});
	const broker = await createBroker({}, [member("billing-1", "billing"), member("billing-2", "billing"), member("mailer", "mailer")]);
	try {
		for (let i = 0; i < 20; i++) await sendToChannel(broker, "orders.placed", { i }, { id: `o-${i}` });
		// A resend of the same id within the duplicate window is not stored again.
		assert.equal((await sendToChannel(broker, "orders.placed", { i: 0 }, { id: "o-0" })).duplicate, true);
		await waitFor(() => seen.length === 40, 5000, "40 deliveries");
		const billing = seen.filter(s => s.group === "billing");
		assert.equal(new Set(billing.map(s => s.id)).size, 20);
		assert.equal(billing.length, 20);
		assert.ok(billing.some(s => s.member === "billing-1") && billing.some(s => s.member === "billing-2"), "the group's members share the work");
		assert.equal(seen.filter(s => s.group === "mailer").length, 20);
	} finally {
		await broker.stop();
	}
});

test("without NATS: a failing handler is retried after its backoff, then dead-lettered with the reason", async () => {
	const tries: number[] = [];
	const dead: ChannelMessage[] = [];
	let flaky = 0;
	const svc: WithChannels = {
		name: "worker",
		channels: {
			jobs: {
				maxDeliver: 3,
				backoff: [50, 100],
				handler(ctx, msg: ChannelMessage) {
					if ((ctx.params as { kind: string }).kind === "flaky" && ++flaky < 2) throw new Error("transient");
					if ((ctx.params as { kind: string }).kind === "poison") {
						tries.push(Date.now());
						throw new Error(`bad job ${msg.id}`);
					}
				}
			},
			"jobs.DLQ"(_ctx, msg: ChannelMessage) {
				dead.push(msg);
			}
		}
	};
	const broker = await createBroker({}, [svc]);
	try {
		await sendToChannel(broker, "jobs", { kind: "poison" }, { id: "p" });
		await sendToChannel(broker, "jobs", { kind: "flaky" }, { id: "f" });
		await waitFor(() => dead.length === 1, 5000, "dead letter");
		assert.equal(tries.length, 3);
		assert.ok(tries[1]! - tries[0]! >= 45 && tries[2]! - tries[1]! >= 95, `backoff between tries: ${tries.map(t => t - tries[0]!)}`);
		assert.equal(flaky, 2, "the transient failure succeeded on its second delivery");
		assert.equal(dead[0]!.headers[DLQ_HEADERS.id], "p");
		assert.equal(dead[0]!.headers[DLQ_HEADERS.deliveries], "3");
		assert.match(dead[0]!.headers[DLQ_HEADERS.error]!, /bad job p/);
	} finally {
		await broker.stop();
	}
});

test("without NATS: a group that starts after messages were sent still gets them", async () => {
	const broker = await createBroker({}, []);
	const got: unknown[] = [];
	try {
		await sendToChannel(broker, "late.channel", { a: 1 });
		await broker.createService({
			name: "late",
			channels: { "late.channel": (ctx: { params: unknown }) => void got.push(ctx.params) }
		} as unknown as ServiceSchema);
		await waitFor(() => got.length === 1, 2000, "replayed message");
		assert.deepEqual(got, [{ a: 1 }]);
	} finally {
		await broker.stop();
	}
});

test("a channel declaration with a bad name or option fails createService", async () => {
	const broker = await createBroker({}, []);
	try {
		assert.throws(() => broker.createService({ name: "bad1", channels: { "no spaces": () => undefined } } as unknown as ServiceSchema), /Channel 'no spaces'/);
		assert.throws(
			() => broker.createService({ name: "bad2", channels: { ok: { maxDeliver: 0, handler: () => undefined } } } as unknown as ServiceSchema),
			/'maxDeliver' must be an integer/
		);
		assert.throws(() => broker.createService({ name: "bad3", channels: { ok: { handler: "nope" } } } as unknown as ServiceSchema), /'handler' must be a function/);
	} finally {
		await broker.stop();
	}
});
