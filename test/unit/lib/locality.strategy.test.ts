import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Errors, ServiceBroker, type Endpoint, type Middleware, type Registry } from "moleculer";
import { ErrorType } from "../../../lib/errors.ts";
import { LocalityStrategy, rank, tierOf, type LocalityStrategyOptions } from "../../../lib/locality.strategy.ts";
import type { Topology } from "../../../lib/settings.ts";
import { LocalityMiddleware } from "../../../middlewares/locality.middleware.ts";

const HERE: Topology = { region: "eu", zone: "eu-1", site: "plant-a", role: "edge" };

function where(site: string, zone = "eu-1", region = "eu", role: Topology["role"] = "edge"): Topology {
	return { region, zone, site, role };
}

function ep(id: string, metadata: Topology | null, local = false): Endpoint {
	return { id, local, node: { id, metadata }, action: { name: "svc.act" }, isAvailable: true } as unknown as Endpoint;
}

function strategy(opts?: LocalityStrategyOptions, here: Topology = HERE): LocalityStrategy {
	const broker = { metadata: here } as unknown as ServiceBroker;
	return new LocalityStrategy({} as Registry, broker, opts);
}

/** How often each endpoint id was picked in `n` selections. */
function picks(s: LocalityStrategy, list: Endpoint[], n = 60): Record<string, number> {
	const out: Record<string, number> = {};
	for (let i = 0; i < n; i++) {
		const id = s.select(list).id;
		out[id] = (out[id] ?? 0) + 1;
	}
	return out;
}

function isUnreachable(err: unknown): boolean {
	const e = err as Errors.MoleculerError;
	return e instanceof Errors.MoleculerRetryableError && e.type === ErrorType.UNREACHABLE && e.code === 503;
}

describe("tiers", () => {
	test("narrowest shared scope: site, zone, region, anywhere; names only count inside their parent", () => {
		assert.equal(tierOf(HERE, where("plant-a")), 1);
		assert.equal(tierOf(HERE, where("plant-b")), 2);
		assert.equal(tierOf(HERE, where("plant-c", "eu-2")), 3);
		assert.equal(tierOf(HERE, where("plant-a", "us-1", "us")), 4, "same site name in another region is not near");
		assert.equal(tierOf(HERE, where("plant-a", "eu-2")), 3, "same site name in another zone is not the same site");
		assert.equal(tierOf(HERE, null), 4, "a node without Lattice metadata is somewhere else");
	});

	test("rank applies require and within", () => {
		assert.equal(rank(HERE, where("plant-a"), true, {}), 0);
		assert.equal(rank(HERE, where("x", "eu-1", "eu", "cloud"), false, { require: "cloud" }), 2);
		assert.equal(rank(HERE, where("plant-a"), false, { require: "cloud" }), -1);
		assert.equal(rank(HERE, where("plant-b"), false, { within: "site" }), -1);
		assert.equal(rank(HERE, where("plant-b"), false, { within: "zone" }), 2);
	});
});

describe("LocalityStrategy.select", () => {
	const local = ep("me", HERE, true);
	const site1 = ep("site-1", where("plant-a"));
	const site2 = ep("site-2", where("plant-a"));
	const zone = ep("zone-1", where("plant-b"));
	const region = ep("region-1", where("plant-c", "eu-2"));
	const far = ep("far-1", where("dc-1", "us-1", "us", "cloud"));

	test("the nearest tier with an endpoint wins, whatever the list order", () => {
		const s = strategy();
		assert.deepEqual(picks(s, [far, region, zone, site1, local]), { me: 60 });
		assert.deepEqual(picks(s, [far, region, zone, site1]), { "site-1": 60 });
		assert.deepEqual(picks(s, [far, region, zone]), { "zone-1": 60 });
		assert.deepEqual(picks(s, [far, region]), { "region-1": 60 });
		assert.deepEqual(picks(s, [far]), { "far-1": 60 });
	});

	test("round-robin inside the winning tier, nothing outside it", () => {
		assert.deepEqual(picks(strategy(), [far, site1, zone, site2], 60), { "site-1": 30, "site-2": 30 });
	});

	test("require: only nodes of that role, nearest first", () => {
		const cloudZone = ep("cloud-zone", where("dc-eu", "eu-1", "eu", "cloud"));
		const s = strategy({ require: "cloud" });
		assert.deepEqual(picks(s, [local, site1, far, cloudZone]), { "cloud-zone": 60 });
		assert.deepEqual(picks(s, [local, site1, far]), { "far-1": 60 });
	});

	test("require with no eligible endpoint fails fast with LATTICE_UNREACHABLE naming the rule", () => {
		const s = strategy({ require: "cloud" });
		assert.throws(
			() => s.select([local, site1, zone]),
			err => isUnreachable(err) && /'cloud' node/.test((err as Error).message) && /svc\.act/.test((err as Error).message)
		);
	});

	test("within keeps calls inside the scope", () => {
		const s = strategy({ within: "site" });
		assert.deepEqual(picks(s, [far, zone, site2]), { "site-2": 60 });
		assert.throws(() => s.select([far, zone, region]), isUnreachable);
	});

	test("an unknown tier name is refused when the strategy is built", () => {
		assert.throws(() => strategy({ within: "planet" as "any" }), /within must be one of/);
	});

	test("a node that re-announces itself elsewhere is ranked again", () => {
		const s = strategy();
		const moving = ep("moving", where("plant-b"));
		assert.deepEqual(picks(s, [moving, zone], 4), { moving: 2, "zone-1": 2 });
		// Moleculer replaces the metadata object when it processes a node's INFO.
		(moving.node as unknown as { metadata: Topology }).metadata = where("plant-a");
		assert.deepEqual(picks(s, [moving, zone], 4), { moving: 4 });
	});
});

describe("in a broker", () => {
	const EDGE = { LATTICE_REGION: "eu", LATTICE_ZONE: "eu-1", LATTICE_SITE: "plant-a", LATTICE_ROLE: "edge" } as const;

	/** A remote node as Moleculer learns it from an INFO packet, serving `svc.act`. */
	function announce(broker: ServiceBroker, id: string, metadata: Topology, strategyOptions?: LocalityStrategyOptions): void {
		const registry = broker.registry as unknown as { processNodeInfo(payload: unknown): void };
		registry.processNodeInfo({
			sender: id,
			instanceID: id,
			metadata,
			seq: 1,
			client: {},
			services: [{ name: "svc", fullName: "svc", settings: {}, metadata: {}, actions: { "svc.act": { name: "svc.act", strategyOptions } }, events: {} }]
		});
	}

	function brokerWith(services: Parameters<ServiceBroker["createService"]>[0][] = []): ServiceBroker {
		const broker = new ServiceBroker({
			nodeID: "edge-me",
			logger: false,
			metadata: where(EDGE.LATTICE_SITE),
			registry: { strategy: LocalityStrategy, preferLocal: false },
			// Moleculer's Middleware type declares `call` as returning a promise rather than the wrapped function.
			middlewares: [LocalityMiddleware({ probeInterval: 0 }) as unknown as Middleware]
		});
		for (const s of services) broker.createService(s);
		return broker;
	}

	test("the registry's endpoint lists use it: a remote endpoint in this site beats one elsewhere", async () => {
		const broker = brokerWith();
		await broker.start();
		try {
			announce(broker, "far", where("dc-1", "us-1", "us", "cloud"));
			announce(broker, "near", where("plant-a"));
			const list = broker.registry.getActionEndpoints("svc.act") as unknown as { next(ctx: unknown): Endpoint };
			for (let i = 0; i < 5; i++) assert.equal(list.next(null).id, "near");
		} finally {
			await broker.stop();
		}
	});

	test("a call whose rules no endpoint meets is a rejected promise, not a synchronous throw", async () => {
		const broker = brokerWith();
		await broker.start();
		try {
			announce(broker, "edge-1", where("plant-a"), { require: "cloud" });
			announce(broker, "edge-2", where("plant-b"), { require: "cloud" });
			let p: Promise<unknown> | undefined;
			assert.doesNotThrow(() => {
				p = broker.call("svc.act");
			});
			await assert.rejects(p!, isUnreachable);
		} finally {
			await broker.stop();
		}
	});

	test("an action that requires the cloud refuses to run on an edge node even as its only endpoint", async () => {
		const broker = brokerWith([
			{
				name: "guarded",
				actions: {
					cloudOnly: { strategyOptions: { require: "cloud" }, handler: () => "ran" },
					anywhere: { handler: () => "ran" }
				}
			}
		]);
		await broker.start();
		try {
			await assert.rejects(broker.call("guarded.cloudOnly"), err => isUnreachable(err) && /edge-me/.test((err as Error).message));
			assert.equal(await broker.call("guarded.anywhere"), "ran");
		} finally {
			await broker.stop();
		}
	});
});
