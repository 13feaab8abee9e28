import { createRequire } from "node:module";
import { pino, type Logger as PinoLogger, type DestinationStream } from "pino";
import { logCorrelation } from "./trace-context.ts";

export interface LoggerOptions {
	/** Moleculer log level (or per-module map). Default "info". */
	level?: string | Record<string, string>;
	/** Human-readable lines (pino-pretty) instead of JSON. Default false. */
	pretty?: boolean;
	/** Fields on every line. */
	base?: Record<string, unknown>;
	/** Where lines go; default stdout. Tests pass a stream to read them back. */
	destination?: DestinationStream;
}

type LogMethod = "fatal" | "error" | "warn" | "info" | "debug" | "trace";

function prettyStream(): DestinationStream | undefined {
	try {
		// pino-pretty is a dev dependency: production images log JSON and never load it.
		const pretty = createRequire(import.meta.url)("pino-pretty") as (o: object) => DestinationStream;
		return pretty({
			sync: true,
			colorize: process.stdout.isTTY,
			translateTime: "HH:MM:ss.l",
			ignore: "pid,hostname,nodeID,ns,mod,svc",
			messageFormat: "{mod}: {msg}",
			singleLine: true
		});
	} catch {
		return undefined;
	}
}

/**
 * Moleculer logs like console (`logger.info("Retrying", { attempts })`); pino wants the object first. This maps
 * one to the other so objects and errors become fields of the JSON line instead of being dropped. Inside an
 * action or event handler every line also gets `traceId`, `spanId`, `requestId`, `service` and `action` (or
 * `event`) from the async context, whichever logger wrote it; fields the caller passes win.
 */
function adapt(logger: PinoLogger): Record<LogMethod, (...args: unknown[]) => void> {
	const method = (type: LogMethod) => (...args: unknown[]) => {
		// Moleculer calls every level (its debug lines run on each call): filter before doing any work.
		if (!logger.isLevelEnabled(type)) return;
		let fields: Record<string, unknown> | undefined = logCorrelation();
		const words: unknown[] = [];
		for (const a of args) {
			if (a instanceof Error) fields = { ...fields, err: a };
			else if (a !== null && typeof a === "object") fields = { ...fields, ...(a as object) };
			else words.push(a);
		}
		const msg = words.join(" ");
		if (fields) logger[type](fields, msg);
		else logger[type](msg);
	};
	return {
		fatal: method("fatal"),
		error: method("error"),
		warn: method("warn"),
		info: method("info"),
		debug: method("debug"),
		trace: method("trace")
	};
}

/** A Moleculer logger config backed by one pino root logger: JSON lines in production, pretty ones otherwise. */
export function pinoLoggerConfig(opts: LoggerOptions = {}) {
	const destination = opts.destination ?? (opts.pretty ? prettyStream() : undefined);
	const root = pino(
		{
			level: "trace",
			base: opts.base ?? null,
			timestamp: pino.stdTimeFunctions.isoTime,
			formatters: { level: label => ({ level: label }) }
		},
		destination ?? pino.destination({ sync: false })
	);
	return {
		type: "Pino",
		options: {
			level: opts.level ?? "info",
			createLogger: (level: string, bindings: Record<string, unknown>) => adapt(root.child(bindings, { level }))
		}
	};
}
