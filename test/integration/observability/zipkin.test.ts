import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import { createBroker } from "../../support/cluster.ts";
import { waitFor } from "../../support/processes.ts";

/** Zipkin v2 as the alternative exporter, chosen with the standard OTEL_TRACES_EXPORTER variable. */

interface ZipkinSpan {
	traceId: string;
	id: string;
	parentId?: string;
	name: string;
	kind?: string;
	localEndpoint?: { serviceName?: string };
	tags?: Record<string, string>;
}

const Services: ServiceSchema[] = [
	{
		name: "front",
		actions: {
			go: { public: true, handler: (ctx: Context) => ctx.call("back.work") },
			fail: { public: true, handler: (ctx: Context) => ctx.call("back.explode") }
		}
	},
	{
		name: "back",
		actions: {
			work: { services: ["front"], handler: () => "done" },
			explode: {
				services: ["front"],
				handler() {
					throw new Error("kaboom");
				}
			}
		}
	}
];

test("spans go to a Zipkin v2 endpoint, as one tree, errors tagged, retried while it is down", async () => {
	const received: ZipkinSpan[] = [];
	const listen = async (port = 0) => {
		const server = http.createServer((req, res) => {
			const chunks: Buffer[] = [];
			req.on("data", (c: Buffer) => chunks.push(c));
			req.on("end", () => {
				if (req.url === "/api/v2/spans") received.push(...(JSON.parse(Buffer.concat(chunks).toString()) as ZipkinSpan[]));
				res.writeHead(202).end();
			});
		});
		await new Promise<void>(r => server.listen(port, "127.0.0.1", r));
		return server;
	};
	let server = await listen();
	const port = (server.address() as AddressInfo).port;

	const broker = await createBroker(
		{
			OTEL_TRACES_EXPORTER: "zipkin",
			OTEL_EXPORTER_ZIPKIN_ENDPOINT: `http://127.0.0.1:${port}/api/v2/spans`,
			OTEL_SERVICE_NAME: "zipkin-test",
			OTEL_BSP_SCHEDULE_DELAY: "50"
		},
		Services
	);
	try {
		await broker.call("front.go");
		await assert.rejects(broker.call("front.fail"), /kaboom/);
		await waitFor(() => received.length >= 4, 10_000, "4 spans at the Zipkin endpoint");
		const go = received.find(s => s.name === "front.go")!;
		const work = received.find(s => s.name === "back.work")!;
		assert.match(go.traceId, /^[0-9a-f]{32}$/);
		assert.equal(work.traceId, go.traceId);
		assert.equal(work.parentId, go.id);
		assert.equal(go.parentId, undefined);
		assert.equal(go.localEndpoint?.serviceName, "zipkin-test");
		const explode = received.find(s => s.name === "back.explode")!;
		assert.equal(explode.tags?.["otel.status_code"], "ERROR");
		assert.equal(explode.tags?.error, "kaboom");

		// Down: the batch fails, then is retried with backoff until the endpoint is back.
		server.closeAllConnections();
		await new Promise<void>(r => server.close(() => r()));
		await broker.call("front.go");
		await new Promise(r => setTimeout(r, 200));
		server = await listen(port);
		await waitFor(() => received.filter(s => s.name === "front.go").length === 2, 10_000, "the span sent while Zipkin was down");
	} finally {
		await broker.stop();
		server.closeAllConnections();
		server.close();
	}
});
