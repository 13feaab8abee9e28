import { test } from "node:test";
import assert from "node:assert/strict";
import { Errors, type Context } from "moleculer";
import { SagaRunner } from "../../../../lib/saga/runner.ts";
import { checkDefinition, type SagaDefinition, type SagaRecord } from "../../../../lib/saga/saga.ts";
import { MemorySagaStore } from "../../../../lib/saga/store.ts";

interface Data {
	log: string[];
	[k: string]: unknown;
}

const ctx = {} as Context;
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));
const quiet = { info() {}, warn() {} };

function runner(def: SagaDefinition<Data>, store = new MemorySagaStore(), owner = "node-a/1", node = "node-a") {
	return new SagaRunner<Data>({ type: "svc.test", def, store, owner, node, leaseMs: 5_000, retryDelay: 1, logger: quiet });
}

/** Steps that record what ran (in a shared array, since data is copied into the store). */
function recorder(names: string[], fail: Record<string, () => Error> = {}) {
	const calls: string[] = [];
	const def: SagaDefinition<Data> = {
		steps: names.map(name => ({
			name,
			timeout: 200,
			retries: 2,
			invoke: async s => {
				calls.push(`${name}:${s.key}`);
				const f = fail[name];
				if (f) throw f();
				return { [name]: true };
			},
			compensate: async () => void calls.push(`undo ${name}`)
		}))
	};
	return { def, calls };
}

test("all steps succeed: completed, data merged, one key per step", async () => {
	const { def, calls } = recorder(["a", "b", "c"]);
	const rec = await runner(def).start("s1", { log: [] }, ctx);
	assert.equal(rec.status, "completed");
	assert.deepEqual(calls, ["a:s1:a", "b:s1:b", "c:s1:c"]);
	assert.equal(rec.data.a && rec.data.b && rec.data.c, true);
});

test("a non-retryable failure compensates at once, the failed step included, last first", async () => {
	const { def, calls } = recorder(["a", "b", "c"], { b: () => new Errors.MoleculerClientError("no", 409, "NOPE") });
	const rec = await runner(def).start("s2", { log: [] }, ctx);
	assert.equal(rec.status, "compensated");
	assert.deepEqual(calls, ["a:s2:a", "b:s2:b", "undo b", "undo a"]);
	assert.deepEqual(rec.error, { step: "b", message: "no", type: "NOPE", code: 409 });
});

test("a retryable failure is retried with the same key before compensating", async () => {
	const { def, calls } = recorder(["a", "b"], { b: () => new Errors.MoleculerRetryableError("busy", 503) });
	const rec = await runner(def).start("s3", { log: [] }, ctx);
	assert.equal(rec.status, "compensated");
	assert.deepEqual(calls, ["a:s3:a", "b:s3:b", "b:s3:b", "b:s3:b", "undo b", "undo a"]);
});

test("a step that hangs times out (retryable), and the saga compensates", async () => {
	let tries = 0;
	const def: SagaDefinition<Data> = {
		steps: [
			{
				name: "slow",
				timeout: 50,
				retries: 1,
				invoke: () => {
					tries++;
					return new Promise(() => undefined);
				}
			}
		]
	};
	const rec = await runner(def).start("s4", { log: [] }, ctx);
	assert.equal(tries, 2);
	assert.equal(rec.status, "compensated");
	assert.equal(rec.error?.type, "LATTICE_SAGA_STEP_TIMEOUT");
});

test("starting an id twice runs the saga once", async () => {
	const { def, calls } = recorder(["a"]);
	const r = runner(def);
	const [x, y] = await Promise.all([r.start("s5", { log: [] }, ctx), r.start("s5", { log: [] }, ctx)]);
	assert.deepEqual(calls, ["a:s5:a"]);
	assert.equal(x.id, y.id);
});

test("recovery: a saga left mid-step is resumed by the next run of the same node, or by anyone once its lease ran out", async () => {
	const store = new MemorySagaStore();
	const { def, calls } = recorder(["a", "b"]);
	// A crashed run left this behind: step b may or may not have happened.
	const left: SagaRecord = {
		id: "s6",
		saga: "svc.test",
		status: "running",
		step: 1,
		attempted: 2,
		data: { log: [] },
		error: null,
		deadline: Date.now() + 60_000,
		history: [],
		createdAt: Date.now(),
		updatedAt: Date.now()
	};
	await store.create(left, "node-a/old", "node-a", 60_000);
	assert.deepEqual(await store.claim(["svc.test"], "node-b/1", "node-b", 10, 5_000), [], "another node waits for the lease");
	const [claimed] = await store.claim(["svc.test"], "node-a/2", "node-a", 10, 5_000);
	assert.ok(claimed);
	const rec = await runner(def, store, "node-a/2").resume(claimed as SagaRecord<Data>, ctx);
	assert.equal(rec.status, "completed");
	assert.deepEqual(calls, ["b:s6:b"], "only the interrupted step ran again, with its key");
	// The old run, if it were still alive, can no longer write.
	assert.equal(await store.save(rec as SagaRecord, "node-a/old", 5_000), false);
});

test("recovery past the deadline compensates instead of resuming", async () => {
	const store = new MemorySagaStore();
	const { def, calls } = recorder(["a", "b"]);
	const left: SagaRecord = {
		id: "s7",
		saga: "svc.test",
		status: "running",
		step: 1,
		attempted: 2,
		data: { log: [] },
		error: null,
		deadline: Date.now() - 1,
		history: [],
		createdAt: Date.now(),
		updatedAt: Date.now()
	};
	await store.create(left, "x/1", "x", 0);
	await sleep(5);
	const [claimed] = await store.claim(["svc.test"], "y/1", "y", 10, 5_000);
	const rec = await runner(def, store, "y/1", "y").resume(claimed as SagaRecord<Data>, ctx);
	assert.equal(rec.status, "compensated");
	assert.deepEqual(calls, ["undo b", "undo a"]);
});

test("a compensation that keeps failing leaves the saga compensating and free for the next sweep", async () => {
	const store = new MemorySagaStore();
	let undo = 0;
	const def: SagaDefinition<Data> = {
		steps: [
			{
				name: "a",
				retries: 1,
				timeout: 100,
				invoke: async () => {
					throw new Error("boom");
				},
				compensate: async () => {
					if (++undo <= 2) throw new Error("still down");
				}
			}
		]
	};
	const r = runner(def, store, "n/1", "n");
	const rec = await r.start("s8", { log: [] }, ctx);
	assert.equal(rec.status, "compensating");
	const [again] = await store.claim(["svc.test"], "m/1", "m", 10, 5_000);
	assert.ok(again, "released: another orchestrator can take it at once");
	const done = await runner(def, store, "m/1", "m").resume(again as SagaRecord<Data>, ctx);
	assert.equal(done.status, "compensated");
	assert.equal(undo, 3);
});

test("a saga taken over by another orchestrator stops at its next write", async () => {
	const store = new MemorySagaStore();
	let release!: () => void;
	const def: SagaDefinition<Data> = {
		steps: [
			{ name: "a", timeout: 1000, retries: 0, invoke: () => new Promise<void>(r => (release = r)) },
			{ name: "b", invoke: async () => assert.fail("b must not run on the old owner") }
		]
	};
	const run = runner(def, store, "old/1", "old").start("s9", { log: [] }, ctx);
	await new Promise(r => setImmediate(r));
	// Lease ran out (0 ms here) and another node claims it.
	await store.save((await store.get("s9"))!, "old/1", 0);
	await sleep(5);
	assert.equal((await store.claim(["svc.test"], "new/1", "new", 10, 5_000)).length, 1);
	release();
	const rec = await run;
	assert.equal(rec.status, "running", "left as the new owner has it");
	assert.equal(rec.step, 0);
});

test("definitions are checked: steps, names, and a lease longer than any step's attempts", () => {
	const step = { name: "a", invoke: async () => undefined };
	assert.throws(() => checkDefinition("x", { steps: [] }, 30_000, 100), /at least one step/);
	assert.throws(() => checkDefinition("x", { steps: [step, step] }, 30_000, 100), /unique/);
	assert.throws(() => checkDefinition("x", { steps: [{ ...step, timeout: 20_000, retries: 1 }] }, 30_000, 100), /below the lease/);
	checkDefinition("x", { steps: [step] }, 30_000, 100);
});
