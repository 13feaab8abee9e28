import type { ServiceBroker, ServiceSchema } from "moleculer";

export const REDACTED = "[redacted]";

/** Option names whose values are credentials wherever they appear (JWT secret, NATS/Redis/DB passwords, keys…). */
const SECRET_NAME = /(?:pass(?:word|phrase)?(?:_?hash)?|secret|token|private_?key|credentials?|creds|nkey(?:_?seed)?|seed|cluster_?key|api_?key|auth)$/i;
/** `scheme://user:password@host`: the password part of a connection URL. */
const URL_PASSWORD = /^([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^@/\s]+@/i;

/**
 * A deep copy of a JSON-safe value with every credential replaced by {@link REDACTED}: values under a secret-looking
 * name, and passwords inside connection URLs. Arrays and nested objects are walked; functions never reach here
 * (the input has been through JSON).
 */
export function redactSecrets(value: unknown, name = ""): unknown {
	if (typeof value === "string") {
		if (SECRET_NAME.test(name) && value !== "") return REDACTED;
		return value.replace(URL_PASSWORD, `$1${REDACTED}@`);
	}
	if (typeof value === "number" && SECRET_NAME.test(name)) return REDACTED;
	if (Array.isArray(value)) return value.map(v => redactSecrets(v, name));
	if (value !== null && typeof value === "object") {
		const out: Record<string, unknown> = {};
		for (const [k, v] of Object.entries(value)) {
			out[k] = redactSecrets(v, k);
		}
		return out;
	}
	return value;
}

/**
 * Moleculer's `$node.options` answers any cluster member with the broker options as they are, which in Lattice hold
 * the JWT signing secret, seeded users' passwords and the Redis, NATS and database credentials: one compromised or
 * misconfigured service could read them and mint tokens. This `$node` extension (broker option `internalServices`)
 * keeps the action, for the REPL and tooling, but answers with credentials redacted.
 */
export function redactedNodeInternals(): ServiceSchema {
	return {
		name: "$node",
		actions: {
			options: {
				cache: false,
				tracing: false,
				params: {},
				handler(this: { broker: ServiceBroker }) {
					return redactSecrets(JSON.parse(JSON.stringify(this.broker.options, circularSafe())));
				}
			}
		}
	};
}

/**
 * A JSON.stringify replacer for option trees: functions and repeated objects are dropped, and a class instance (the
 * cacher with its live Redis client, a transporter) is named rather than walked, since its internals hold
 * connection state and credentials under names no pattern can foresee.
 */
function circularSafe() {
	const seen = new WeakSet<object>();
	return (_key: string, value: unknown) => {
		if (typeof value === "function") return undefined;
		if (value !== null && typeof value === "object") {
			const proto = Object.getPrototypeOf(value) as object | null;
			if (proto !== null && proto !== Object.prototype && !Array.isArray(value)) return `[${value.constructor.name}]`;
			if (seen.has(value)) return undefined;
			seen.add(value);
		}
		return value;
	};
}
