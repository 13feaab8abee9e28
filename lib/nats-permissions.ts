import { configError } from "./errors.ts";

/**
 * Broker-enforced mode: with `LATTICE_BROKER_ENFORCED=true` (Moleculer's `disableBalancer`) every call is published
 * on its action's own subject, `MOL-<ns>.REQB.<action>`, and every balanced event on `MOL-<ns>.EVENTB.<group>.<event>`.
 * Subjects then say what a packet is for, so NATS permissions can decide who may call and serve what: this module
 * turns a declaration of each deployable unit's calls into one NATS user per unit, for nats-server's
 * `authorization { users: [...] }`.
 *
 * What stays open by necessity: every unit may publish responses to any node (`RES.>`), discovery, heartbeats and
 * pings, and a unit that broadcasts events may publish to every node's `EVENT.<node>` subject (broadcasts are
 * addressed per node, not per event). Targeted calls (`REQ.<node>`, Moleculer's `nodeID` call option) are refused
 * to everyone: they would bypass the per-action subjects.
 */

export interface BusMember {
	/**
	 * Password for this unit's NATS user: a literal, or `$NAME` to let nats-server read it from its environment
	 * (the default is `$NATS_PASSWORD_<UNIT>`). Ignored when `nkey` is set.
	 */
	password?: string;
	/** Public nkey (`U…`) instead of a password; the unit gets the seed in `LATTICE_NATS_NKEY_SEED`. */
	nkey?: string;
	/** Actions this unit serves, as NATS patterns over the action name: `products.list`, `products.*`, `v2.>`. */
	serves?: string[];
	/** Actions it may call, same patterns. */
	calls?: string[];
	/**
	 * Event groups its handlers belong to (a handler's group defaults to its service name), `$`-events included:
	 * Moleculer subscribes a balanced subject for every handler, and NATS refuses the ones not listed here.
	 */
	eventGroups?: string[];
	/** Events it may emit to groups (`broker.emit`), same patterns. */
	emits?: string[];
	/**
	 * May it `broker.broadcast` (any event, to any node)? Default false. Cleaning cache entries broadcasts an
	 * invalidation, so a unit whose writes clean the cache needs it.
	 */
	broadcasts?: boolean;
	/**
	 * NATS pattern for this unit's node ids, when they are dot-separated like `catalog.<pod>` (`catalog.*`): its
	 * per-node subjects are then its own, and it cannot read responses meant for other units. Default `>` (any).
	 */
	nodeIds?: string;
	/** Further subjects, verbatim (e.g. JetStream's `$JS.API.>` for channels). */
	extra?: { publish?: string[]; subscribe?: string[] };
}

export interface BusPolicy {
	/** The Moleculer namespace (`NAMESPACE`), "" for none. */
	namespace: string;
	/** One entry per NATS user, keyed by user name (LATTICE_NATS_USER). */
	members: Record<string, BusMember>;
}

export interface NatsUser {
	user?: string;
	/** `$NAME` values are written unquoted, so nats-server resolves them from its environment. */
	password?: string;
	nkey?: string;
	permissions: { publish: { allow: string[] }; subscribe: { allow: string[] } };
}

const TOKEN = /^[^\s.*>]+$/;

/** A NATS subject pattern: dot-separated tokens, `*` for one token, `>` for the rest. */
function checkPattern(pattern: string, where: string): string {
	const tokens = pattern.split(".");
	const ok = tokens.every((t, i) => TOKEN.test(t) || t === "*" || (t === ">" && i === tokens.length - 1));
	if (!ok) throw configError(`${where}: '${pattern}' is not a NATS subject pattern (tokens, '*', or a final '>')`, { pattern });
	return pattern;
}

function list(value: unknown, where: string): string[] {
	if (value === undefined) return [];
	if (!Array.isArray(value) || !value.every(v => typeof v === "string" && v.length > 0)) {
		throw configError(`${where} must be an array of non-empty strings`);
	}
	return value as string[];
}

/** The NATS users for a policy, one per member, in the member order. */
export function natsUsers(policy: BusPolicy): NatsUser[] {
	if (typeof policy?.namespace !== "string" || !policy.members || typeof policy.members !== "object") {
		throw configError("A bus policy needs 'namespace' (string) and 'members' (object)");
	}
	if (policy.namespace && !TOKEN.test(policy.namespace)) throw configError(`namespace '${policy.namespace}' cannot be part of a NATS subject`);
	const p = policy.namespace ? `MOL-${policy.namespace}` : "MOL";

	return Object.entries(policy.members).map(([name, m]) => {
		const at = `members.${name}`;
		if (!TOKEN.test(name)) throw configError(`${at}: a user name needs no dots, spaces or wildcards`);
		const patterns = (key: keyof BusMember) => list(m[key], `${at}.${key}`).map(v => checkPattern(v, `${at}.${key}`));
		const node = checkPattern(m.nodeIds ?? ">", `${at}.nodeIds`);
		const groups = list(m.eventGroups, `${at}.eventGroups`).map(g => {
			if (!TOKEN.test(g)) throw configError(`${at}.eventGroups: '${g}' must be a single token`);
			return g;
		});

		const publish = [
			`${p}.DISCOVER`,
			`${p}.DISCOVER.>`,
			`${p}.INFO`,
			`${p}.INFO.>`,
			`${p}.HEARTBEAT`,
			`${p}.DISCONNECT`,
			`${p}.PING`,
			`${p}.PING.>`,
			`${p}.PONG.>`,
			`${p}.RES.>`,
			...patterns("calls").map(a => `${p}.REQB.${a}`),
			...patterns("emits").map(e => `${p}.EVENTB.*.${e}`),
			...(m.broadcasts ? [`${p}.EVENT.>`] : []),
			...list(m.extra?.publish, `${at}.extra.publish`)
		];
		const subscribe = [
			`${p}.DISCOVER`,
			`${p}.INFO`,
			`${p}.HEARTBEAT`,
			`${p}.DISCONNECT`,
			`${p}.PING`,
			...["DISCOVER", "INFO", "PING", "PONG", "REQ", "RES", "EVENT"].map(t => `${p}.${t}.${node}`),
			// Every node serves Moleculer's $node actions on balanced subjects; nobody may call them unless declared.
			`${p}.REQB.$node.>`,
			// Every node with a cacher runs `$lattice-cache` (lib/two-level.cacher.ts), whose handler is subscribed too.
			`${p}.EVENTB.$lattice-cache.>`,
			...patterns("serves").map(a => `${p}.REQB.${a}`),
			...groups.map(g => `${p}.EVENTB.${g}.>`),
			...list(m.extra?.subscribe, `${at}.extra.subscribe`)
		];

		const user: NatsUser = { permissions: { publish: { allow: publish }, subscribe: { allow: subscribe } } };
		if (m.nkey) {
			if (!/^U[A-Z2-7]{55}$/.test(m.nkey)) throw configError(`${at}.nkey must be a user public nkey (U…, 56 characters)`);
			user.nkey = m.nkey;
		} else {
			user.user = name;
			user.password = m.password ?? `$NATS_PASSWORD_${name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
		}
		return user;
	});
}

function value(v: string): string {
	return /^\$[A-Za-z_][A-Za-z0-9_]*$/.test(v) ? v : JSON.stringify(v);
}

function subjects(list: string[], indent: string): string {
	return `[\n${list.map(s => `${indent}  ${JSON.stringify(s)}`).join("\n")}\n${indent}]`;
}

/** nats-server configuration text: an `authorization` block to include in (or paste into) the server's config. */
export function renderNatsAuthorization(policy: BusPolicy, source = "a bus policy"): string {
	const users = natsUsers(policy).map(u => {
		const who = u.nkey ? `      nkey: ${value(u.nkey)}` : `      user: ${value(u.user!)}\n      password: ${value(u.password!)}`;
		return [
			"    {",
			who,
			"      permissions: {",
			`        publish: { allow: ${subjects(u.permissions.publish.allow, "        ")} }`,
			`        subscribe: { allow: ${subjects(u.permissions.subscribe.allow, "        ")} }`,
			"      }",
			"    }"
		].join("\n");
	});
	return [
		`# Generated from ${source} by \`npm run nats:permissions\`: Lattice broker-enforced mode`,
		`# (LATTICE_BROKER_ENFORCED=true on every node), namespace "${policy.namespace}". Regenerate, do not edit.`,
		"authorization {",
		"  users: [",
		users.join("\n"),
		"  ]",
		"}",
		""
	].join("\n");
}
