import { Errors, type Context, type Service, type ServiceSchema } from "moleculer";
import type { Principal } from "../lib/access.ts";
import { ErrorType, unauthorized } from "../lib/errors.ts";
import { createTokenIssuer, type TokenIssuer } from "../lib/jwt.ts";
import { jwtKeys } from "../lib/jwt-keys.ts";
import { latticeSettings } from "../lib/settings.ts";
import { UserDirectory } from "../lib/users.ts";

interface AuthThis extends Service {
	issuer: TokenIssuer | null;
	users: UserDirectory | null;
}

/**
 * Login for the example domain: accounts from LATTICE_USERS (scrypt hashes), access tokens signed with the
 * configured key. With only a public key or a JWKS URL this node issues nothing and login answers 404.
 */
const AuthService: ServiceSchema<Record<string, unknown>> = {
	name: "auth",

	created() {
		this.createIssuer();
	},

	started() {
		return this.loadUsers();
	},

	actions: {
		login: {
			public: true,
			params: {
				username: { type: "string", min: 1, max: 128 },
				password: { type: "string", min: 1, max: 1024 }
			},
			handler(ctx: Context<{ username: string; password: string }>) {
				return this.login(ctx.params.username, ctx.params.password);
			}
		},

		/** The caller as the gateway saw it: open to any authenticated user (undeclared), refused to services. */
		me: {
			params: {},
			handler(ctx: Context<Record<string, never>, { user?: Principal | null }>) {
				const user = ctx.meta.user;
				if (!user) throw unauthorized("No user in this call");
				return { id: user.id, username: user.username ?? null, roles: user.roles, permissions: user.permissions };
			}
		}
	},

	methods: {
		/** Refuses to start without a JWT key in production; a node with only a public key or JWKS issues nothing. */
		createIssuer(this: AuthThis) {
			const { auth, production } = latticeSettings(this.broker);
			const keys = jwtKeys(auth.jwt, production);
			if (keys.ephemeral) this.logger.warn("No JWT key configured: signing with a random per-process secret (development only; set LATTICE_JWT_SECRET)");
			this.issuer = createTokenIssuer(keys, auth.jwt);
			this.users = null;
		},

		async loadUsers(this: AuthThis) {
			this.users = await UserDirectory.create(latticeSettings(this.broker).auth.users);
			if (this.issuer) this.logger.info(`Login ready for ${this.users.size} account(s)`);
		},

		async login(this: AuthThis, username: string, password: string) {
			if (!this.issuer || !this.users) {
				throw new Errors.MoleculerClientError("Login is not offered here: tokens come from the identity provider", 404, ErrorType.LOGIN_DISABLED);
			}
			const principal = await this.users.authenticate(username, password);
			if (!principal) throw unauthorized("Invalid username or password", ErrorType.LOGIN_FAILED);
			const issued = await this.issuer(principal);
			return { tokenType: "Bearer", accessToken: issued.token, expiresIn: issued.expiresIn, expiresAt: issued.expiresAt };
		}
	}
};

export default AuthService;
