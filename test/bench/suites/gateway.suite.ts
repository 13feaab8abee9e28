import { uniqueNamespace } from "../../support/cluster.ts";
import { freePort } from "../../support/processes.ts";
import { startRole, type Role } from "../child.ts";
import { httpLoad } from "../http-load.ts";
import { interleave, type CellPlan, type Metrics } from "../interleave.ts";
import { HELLO_PATH, PRODUCTS_PATH, type SystemKind } from "../protocol.ts";
import { fmtFixed, fmtInt, fmtRatio, type Table } from "../table.ts";
import { medianOf, pairedRatio, type Suite, type SuiteContext, type SuiteResult } from "./suite.ts";

const CELLS: Array<{ route: string; path: string; connections: number }> = [
	{ route: "hello", path: HELLO_PATH, connections: 10 },
	{ route: "hello", path: HELLO_PATH, connections: 64 },
	{ route: "products", path: PRODUCTS_PATH, connections: 64 }
];

interface Gateway {
	name: SystemKind;
	role: Role;
	base: string;
}

async function startGateway(kind: SystemKind): Promise<Gateway> {
	const port = await freePort();
	const namespace = uniqueNamespace(`bench-gw-${kind}`);
	const role = await startRole("gateway", { kind, namespace, nodeID: `${namespace}-gw`, transporter: null, port });
	return { name: kind, role, base: `http://127.0.0.1:${port}` };
}

/** Requests/s from autocannon, and the gateway process's CPU per request. */
async function load(gw: Gateway, path: string, connections: number, seconds: number): Promise<Metrics> {
	const before = await gw.role.request("stats", null);
	const r = await httpLoad(gw.base + path, connections, seconds);
	const after = await gw.role.request("stats", null);
	return { ...r, gatewayUs: (after.cpuUs - before.cpuUs) / Math.max(1, r.requests) };
}

/**
 * Item 4: HTTP throughput through Lattice's gateway (its real api service, one alias added) against a bare
 * moleculer-web ApiService, each calling actions in its own process. autocannon runs in this process.
 */
export const gatewaySuite: Suite = {
	name: "gateway",
	async run(ctx: SuiteContext): Promise<SuiteResult> {
		const { options } = ctx;
		const seconds = options.cellMs / 1000;
		const gateways: Gateway[] = [];
		try {
			gateways.push(await startGateway("lattice"), await startGateway("bare"));
			for (const gw of gateways) {
				for (const c of CELLS) await httpLoad(gw.base + c.path, c.connections, 1);
			}
			const cells: CellPlan[] = CELLS.map(c => ({
				cell: `${c.route} c=${c.connections}`,
				contenders: gateways.map(gw => ({ system: gw.name, run: () => load(gw, c.path, c.connections, seconds) }))
			}));
			const results = await interleave("gateway", cells, options.rounds, ctx.progress);
			return { name: "gateway", cells: results, tables: [table(cells, results)], notes: [] };
		} finally {
			await Promise.all(gateways.map(g => g.role.stop()));
		}
	}
};

function table(cells: CellPlan[], results: SuiteResult["cells"]): Table {
	return {
		title: "4. HTTP gateway, local actions, autocannon (median req/s; latency in whole ms, autocannon's resolution; gateway CPU µs per request)",
		columns: ["route / connections", "Lattice req/s", "bare req/s", "L/bare", "L p50", "bare p50", "L p99", "bare p99", "L CPU µs", "bare CPU µs", "errors L/bare"],
		rows: cells.map(({ cell }) => {
			const l = medianOf(results, cell, "lattice");
			const b = medianOf(results, cell, "bare");
			return [
				cell,
				fmtInt(l.rate),
				fmtInt(b.rate),
				fmtRatio(pairedRatio(results, "rate", { cell, system: "lattice" }, { cell, system: "bare" })),
				fmtInt(l.p50),
				fmtInt(b.p50),
				fmtInt(l.p99),
				fmtInt(b.p99),
				fmtFixed(l.gatewayUs),
				fmtFixed(b.gatewayUs),
				`${fmtInt(l.errors)}/${fmtInt(b.errors)}`
			];
		}),
		notes: [
			`${HELLO_PATH} calls a trivial action. ${PRODUCTS_PATH} is the example products.list (moleculer-db, memory adapter):`,
			"Lattice caches it by default (in-process cacher), bare Moleculer has no cacher unless configured."
		]
	};
}
