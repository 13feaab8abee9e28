import { test } from "node:test";
import assert from "node:assert/strict";
import { ServiceBroker } from "moleculer";
import { SagaMixin } from "../../../mixins/saga.mixin.ts";
import { sleep } from "../../support/processes.ts";

test("a service stopped while its start-up recovery runs leaves no sweep timer behind", async () => {
	const broker = new ServiceBroker({ logger: false });
	let recovering!: () => void;
	const recovery = new Promise<void>(resolve => (recovering = resolve));
	const svc = broker.createService({
		name: "orders",
		mixins: [SagaMixin({ sagas: { place: { steps: [{ name: "only", invoke: async () => undefined }] } }, sweepInterval: 60_000 })],
		methods: {
			// The recovery is still reading the store when the stop comes.
			async recoverSagas() {
				recovering();
				await sleep(200);
				return 0;
			}
		}
	}) as unknown as { sagaTimer: NodeJS.Timeout | null | undefined };
	await broker.start();
	await recovery;
	await broker.stop();
	await sleep(300);
	// A timer set after the stop would keep sweeping a closed store, and keep the process from exiting.
	const leaked = svc.sagaTimer ?? null;
	if (leaked) clearInterval(leaked);
	assert.equal(leaked, null);
});
