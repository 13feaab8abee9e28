import { backoffDelay, type ChannelMessage, type ChannelStats, type Subscription } from "./channel.ts";
import type { ReceiptStore } from "./receipts.ts";

/** What to do with a delivered message once its turn is over. */
export type Verdict =
	| { kind: "ack" }
	| { kind: "retry"; delay: number }
	| { kind: "dead"; error: string };

interface Logger {
	warn(...args: unknown[]): void;
}

/** A claimed message whose group-mate is still on it (the same id stored twice) is looked at again after this. */
const BUSY_RETRY = 1_000;
/** A lease outlives the handler's timeout by this much, so a slow ack is not mistaken for a dead member. */
const LEASE_MARGIN = 5_000;

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
	let timer: NodeJS.Timeout;
	return Promise.race([
		p,
		new Promise<never>((_, reject) => {
			timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
		})
	]).finally(() => clearTimeout(timer));
}

function describe(err: unknown): string {
	const e = err as { message?: string; type?: string };
	return `${e?.type ? `${e.type}: ` : ""}${e?.message ?? String(err)}`.slice(0, 1000);
}

/**
 * One delivery of one message to one member, the same for every adapter: dedupe by receipt, run the handler
 * with its timeout, then ack, retry after the backoff, or dead-letter after `maxDeliver` failed deliveries.
 * A failure of the receipt store itself is retried, never dead-lettered: the message is not at fault.
 */
export async function deliver(sub: Subscription, msg: ChannelMessage, receipts: ReceiptStore, stats: ChannelStats, logger: Logger): Promise<Verdict> {
	let claim;
	try {
		claim = await receipts.claim(sub.group, msg.id, sub.timeout + LEASE_MARGIN);
	} catch (err) {
		logger.warn(`Channel '${sub.channel}' (${sub.group}): receipt store unavailable; message '${msg.id}' retried later`, describe(err));
		stats.record(sub.channel, sub.group, "retried");
		return { kind: "retry", delay: backoffDelay(sub.backoff, msg.delivery) || BUSY_RETRY };
	}
	if (claim === "done") {
		stats.record(sub.channel, sub.group, "duplicate");
		return { kind: "ack" };
	}
	if (claim === "busy") return { kind: "retry", delay: BUSY_RETRY };

	try {
		await timeout(sub.handle(msg), sub.timeout, `Handler of channel '${sub.channel}'`);
	} catch (err) {
		await receipts.release(sub.group, msg.id).catch(() => undefined);
		if (msg.delivery >= sub.maxDeliver) {
			logger.warn(`Channel '${sub.channel}' (${sub.group}): message '${msg.id}' failed ${msg.delivery} times; dead-lettered to '${sub.deadLetter}'`, describe(err));
			stats.record(sub.channel, sub.group, "dead_lettered");
			return { kind: "dead", error: describe(err) };
		}
		stats.record(sub.channel, sub.group, "retried");
		return { kind: "retry", delay: backoffDelay(sub.backoff, msg.delivery) };
	}
	try {
		await receipts.complete(sub.group, msg.id);
	} catch (err) {
		// The handler ran; without the receipt the redelivery runs it again once the lease ends (at least once).
		logger.warn(`Channel '${sub.channel}' (${sub.group}): receipt for '${msg.id}' not written`, describe(err));
		return { kind: "retry", delay: sub.timeout + LEASE_MARGIN };
	}
	stats.record(sub.channel, sub.group, "handled");
	return { kind: "ack" };
}
