import { readFileSync } from "node:fs";
import {
	credsAuthenticator,
	nkeyAuthenticator,
	tokenAuthenticator,
	usernamePasswordAuthenticator,
	type Authenticator
} from "nats";
import { configError } from "./errors.ts";

/** How a node proves itself to NATS; at most one way. Names are the environment variables they come from. */
export interface NatsCredentials {
	LATTICE_NATS_USER?: string;
	LATTICE_NATS_PASSWORD?: string;
	LATTICE_NATS_TOKEN?: string;
	/** An nkey seed (`SU…`): the server knows the user by its public key. */
	LATTICE_NATS_NKEY_SEED?: string;
	/** Path of a `.creds` file (user JWT + seed), for servers in operator/JWT mode. */
	LATTICE_NATS_CREDS?: string;
}

/**
 * One nats.js authenticator for the configured credentials, or undefined for none.
 *
 * Moleculer's NATS transporter copies `user`/`pass` from the URL over the options when it parses `url`
 * (transporters/nats.js, connect), wiping credentials given as options; an authenticator is left alone.
 * Seeds and creds files are tried once here: the client would only parse them on connect, and fail in a loop.
 */
export function natsAuthenticator(c: NatsCredentials): Authenticator | undefined {
	const given = (["LATTICE_NATS_USER", "LATTICE_NATS_TOKEN", "LATTICE_NATS_NKEY_SEED", "LATTICE_NATS_CREDS"] as const).filter(
		k => c[k]?.trim()
	);
	if (given.length > 1) throw configError(`Set one way to authenticate to NATS, not ${given.join(" and ")}`, { given });
	const name = given[0];
	if (!name) return undefined;
	const value = c[name]!.trim();
	try {
		let auth: Authenticator;
		if (name === "LATTICE_NATS_USER") auth = usernamePasswordAuthenticator(value, c.LATTICE_NATS_PASSWORD ?? "");
		else if (name === "LATTICE_NATS_TOKEN") auth = tokenAuthenticator(value);
		else if (name === "LATTICE_NATS_NKEY_SEED") auth = nkeyAuthenticator(new TextEncoder().encode(value));
		else auth = credsAuthenticator(readFileSync(value));
		auth("probe");
		return auth;
	} catch (err) {
		throw configError(`${name} is not usable: ${(err as Error).message}`, { name });
	}
}
