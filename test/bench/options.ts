import { parseArgs } from "node:util";
import path from "node:path";
import { NATS_URL, REDIS_URL } from "../support/cluster.ts";
import { ROOT } from "../support/processes.ts";

/** The default run, in order. */
export const SUITES = ["remote", "cache", "serializer", "strategy", "gateway", "coldstart"] as const;
/** Run only when asked for with --only. */
export const EXTRA_SUITES = ["overhead"] as const;
export type SuiteName = (typeof SUITES)[number] | (typeof EXTRA_SUITES)[number];
const KNOWN: readonly string[] = [...SUITES, ...EXTRA_SUITES];

export interface BenchOptions {
	quick: boolean;
	/** Times every cell is measured, interleaved across systems; tables show the median. */
	rounds: number;
	/** Measured time of one closed-loop or HTTP cell. */
	cellMs: number;
	/** Unmeasured lead-in of every cell. */
	warmupMs: number;
	/** Measured time of one open-loop cell. */
	openMs: number;
	/** How long a started node idles before its RSS is read. */
	settleMs: number;
	suites: SuiteName[];
	natsUrl: string;
	redisUrl: string;
	out: string;
}

const USAGE = `npm run bench [-- --quick] [--rounds N] [--cell-ms MS] [--only ${KNOWN.join(",")}] [--out FILE]\n`;

export function parseOptions(argv: string[]): BenchOptions {
	const { values } = parseArgs({
		args: argv,
		options: {
			quick: { type: "boolean", default: false },
			rounds: { type: "string" },
			"cell-ms": { type: "string" },
			only: { type: "string" },
			out: { type: "string" },
			help: { type: "boolean", default: false }
		},
		strict: true
	});
	if (values.help) {
		process.stdout.write(USAGE);
		process.exit(0);
	}
	const quick = values.quick ?? false;
	const suites = values.only ? values.only.split(",").map(s => s.trim()) : [...SUITES];
	for (const s of suites) {
		if (!KNOWN.includes(s)) throw new Error(`unknown suite '${s}'; one of ${KNOWN.join(", ")}`);
	}
	return {
		quick,
		rounds: positive(values.rounds, quick ? 2 : 3, "--rounds"),
		cellMs: positive(values["cell-ms"], quick ? 1000 : 2000, "--cell-ms"),
		warmupMs: quick ? 200 : 300,
		openMs: quick ? 2000 : 4000,
		settleMs: quick ? 2000 : 5000,
		suites: suites as SuiteName[],
		natsUrl: NATS_URL,
		redisUrl: REDIS_URL,
		out: path.resolve(ROOT, values.out ?? ".bench/results.json")
	};
}

function positive(raw: string | undefined, fallback: number, name: string): number {
	if (raw === undefined) return fallback;
	const n = Number(raw);
	if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got '${raw}'`);
	return n;
}
