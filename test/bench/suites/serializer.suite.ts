import { createRequire } from "node:module";
import { codecCost, serializerFor } from "../codec.ts";
import { interleave, medianMetrics, type CellPlan, type CellResult } from "../interleave.ts";
import { PAYLOADS, type PayloadName } from "../payloads.ts";
import type { SerializerName } from "../protocol.ts";
import { measure, startRemoteSystem, warmUp, type RemoteSystem } from "../remote.ts";
import { fmtFixed, fmtInt, fmtMs, fmtRatio, type Table } from "../table.ts";
import { medianOf, pairedRatio, type Suite, type SuiteContext, type SuiteResult } from "./suite.ts";

/** Moleculer loads these lazily; a serializer whose package is not installed is skipped. */
const PACKAGES: Record<SerializerName, string | null> = { JSON: null, CBOR: "cbor-x", MsgPack: "msgpack5", Notepack: "notepack.io" };

const CELLS: Array<{ payload: PayloadName; concurrency: number }> = [
	{ payload: "small", concurrency: 64 },
	{ payload: "1KiB", concurrency: 64 }
];

function installed(pkg: string | null): boolean {
	if (!pkg) return true;
	try {
		createRequire(import.meta.url).resolve(pkg);
		return true;
	} catch {
		return false;
	}
}

/** Item 6a: the remote-call bench for Lattice's config with each serializer. */
export const serializerSuite: Suite = {
	name: "serializer",
	async run(ctx: SuiteContext): Promise<SuiteResult> {
		const { options } = ctx;
		const all = Object.keys(PACKAGES) as SerializerName[];
		const usable = all.filter(s => installed(PACKAGES[s]));
		const missing = all.filter(s => !usable.includes(s));
		const notes = missing.length
			? [
					`${missing.join(", ")} skipped: not installed. To compare them: ` +
						`npm install --no-save ${missing.map(s => PACKAGES[s]).join(" ")}`
				]
			: [];
		const systems: RemoteSystem[] = [];
		try {
			for (const serializer of usable) {
				systems.push(await startRemoteSystem(serializer, { kind: "lattice", transporter: options.natsUrl, serializer }));
			}
			for (const s of systems) await warmUp(s, options.warmupMs * 3);
			const cells: CellPlan[] = CELLS.map(({ payload, concurrency }) => ({
				cell: `${payload} c=${concurrency}`,
				contenders: systems.map(s => ({
					system: s.name,
					run: () =>
						measure(s, {
							closed: {
								action: "bench.echo",
								params: { kind: "fixed", value: PAYLOADS[payload] },
								concurrency,
								warmupMs: options.warmupMs,
								durationMs: options.cellMs
							}
						})
				}))
			}));
			const results = await interleave("serializer", cells, options.rounds, ctx.progress);
			const codec = codecCosts(usable, options.rounds, options.quick ? 100 : 250);
			return {
				name: "serializer",
				cells: [...results, ...codec],
				tables: [table(cells, usable, results), codecTable(usable, codec)],
				notes
			};
		} finally {
			await Promise.all(systems.map(s => s.stop()));
		}
	}
};

function table(cells: CellPlan[], serializers: SerializerName[], results: SuiteResult["cells"]): Table {
	return {
		title: "6a. Lattice remote calls by serializer (median calls/s, ratio to JSON, p50 ms)",
		columns: ["payload / in flight", ...serializers.flatMap(s => (s === "JSON" ? ["JSON/s", "p50"] : [`${s}/s`, "÷JSON", "p50"]))],
		rows: cells.map(({ cell }) => {
			return [
				cell,
				...serializers.flatMap(s => {
					const m = medianOf(results, cell, s);
					const vsJson = pairedRatio(results, "rate", { cell, system: s }, { cell, system: "JSON" });
					return s === "JSON" ? [fmtInt(m.rate), fmtMs(m.p50)] : [fmtInt(m.rate), fmtRatio(vsJson), fmtMs(m.p50)];
				})
			];
		})
	};
}

const CODEC_PAYLOADS: PayloadName[] = ["small", "1KiB"];

/** Each serializer's own CPU per call, measured in this process, round after round like the remote cells. */
function codecCosts(serializers: SerializerName[], rounds: number, ms: number): CellResult[] {
	const cells = new Map<string, CellResult>();
	const instances = new Map(serializers.map(s => [s, serializerFor(s)]));
	for (let r = 0; r < rounds; r++) {
		for (const payload of CODEC_PAYLOADS) {
			for (const [name, serializer] of instances) {
				const key = `${payload}\u0000${name}`;
				let cell = cells.get(key);
				if (!cell) {
					cell = { suite: "serializer-codec", cell: `${payload} codec`, system: name, rounds: [], median: {} };
					cells.set(key, cell);
				}
				const cost = codecCost(serializer, PAYLOADS[payload], ms);
				cell.rounds.push({ usPerCall: cost.usPerCall, bytesPerCall: cost.bytesPerCall });
			}
		}
	}
	for (const c of cells.values()) c.median = medianMetrics(c.rounds);
	return [...cells.values()];
}

function codecTable(serializers: SerializerName[], results: CellResult[]): Table {
	return {
		title: "6a'. Serializer cost alone: encode + decode of one call's request and response (median CPU µs; bytes of both packets)",
		columns: ["payload", ...serializers.flatMap(s => [`${s} µs`, "bytes"])],
		rows: CODEC_PAYLOADS.map(payload => [
			payload,
			...serializers.flatMap(s => {
				const m = medianOf(results, `${payload} codec`, s);
				return [fmtFixed(m.usPerCall, 2), fmtInt(m.bytesPerCall)];
			})
		])
	};
}
