import { randomUUID } from "node:crypto";
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { BlockList, Socket } from "node:net";
import bodyParser from "body-parser";
import ApiGateway from "moleculer-web";
import { Errors, type ActionSchema, type Context, type Service, type ServiceSchema } from "moleculer";
import { compileRule, decide, denial, type CompiledRule, type Principal } from "../lib/access.ts";
import { ErrorType, unauthorized } from "../lib/errors.ts";
import { arrivedOverTls, clientAddress, originMatcher, SECURITY_HEADERS, setSecurityHeaders, trustedProxies } from "../lib/http-security.ts";
import { createTokenVerifier, type TokenVerifier } from "../lib/jwt.ts";
import { jwtKeys } from "../lib/jwt-keys.ts";
import { rateLimitStoreFactory, type RateLimitStore } from "../lib/rate-limit.store.ts";
import { latticeSettings, type GatewaySettings } from "../lib/settings.ts";
import { traceHttpRequest } from "../lib/tracer.ts";

interface ErrorLike {
	name?: string;
	message?: string;
	code?: number;
	type?: string;
	data?: unknown;
}

/** What the gateway learns about a request before moleculer-web routes it. */
interface GatewayRequest extends IncomingMessage {
	$client?: string;
	$principal?: Principal | null;
	$authError?: Error;
	$endpoint?: { action: ActionSchema; service?: { fullName?: string; name?: string } };
	$route?: { rateLimit?: { store?: RateLimitStore } };
}

type Next = (err?: unknown) => void;
type RouteMiddleware = (this: ApiThis, req: GatewayRequest, res: ServerResponse, next: Next) => void;

interface RouteOptions {
	name?: string;
	path: string;
	aliases?: Record<string, string>;
	use?: RouteMiddleware[];
	[option: string]: unknown;
}

interface ApiThis extends Service {
	verifyToken: TokenVerifier;
	proxies: BlockList | null;
	gateway: GatewaySettings;
	rules: WeakMap<object, CompiledRule>;
	routes: { rateLimit?: { store?: RateLimitStore } }[];
	server: Server;
	answerClientError(err: NodeJS.ErrnoException, socket: Socket): void;
}

type Schema = ServiceSchema<Record<string, unknown>>;

/** Moleculer calls `merged` (after mixins, before settings are applied); its typings leave it out. */
type GatewaySchema = Schema & { merged(this: Service, schema: Schema): void };

const REQUEST_ID = /^[\w.:-]{1,128}$/;
// RFC 6750 b64token.
const BEARER = /^Bearer +([\w~+/.-]+=*)$/i;
const BODY_METHODS = new Set(["POST", "PUT", "PATCH"]);
const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

// moleculer-web's own error types, mapped to Lattice's stable codes.
const FOREIGN_TYPES: Record<string, string> = {
	NOT_FOUND: ErrorType.ROUTE_NOT_FOUND,
	ORIGIN_NOT_ALLOWED: ErrorType.ORIGIN_NOT_ALLOWED,
	UNABLE_DECODE_PARAM: ErrorType.BAD_REQUEST,
	PAYLOAD_TOO_LARGE: ErrorType.PAYLOAD_TOO_LARGE,
	NO_TOKEN: ErrorType.UNAUTHORIZED,
	INVALID_TOKEN: ErrorType.TOKEN_INVALID
};
const BY_STATUS: Record<number, string> = {
	401: ErrorType.UNAUTHORIZED,
	403: ErrorType.FORBIDDEN,
	404: ErrorType.NOT_FOUND,
	408: ErrorType.REQUEST_TIMEOUT,
	413: ErrorType.PAYLOAD_TOO_LARGE,
	415: ErrorType.UNSUPPORTED_MEDIA_TYPE,
	429: ErrorType.RATE_LIMITED,
	431: ErrorType.HEADERS_TOO_LARGE
};

function errorType(err: ErrorLike, code: number): string {
	const t = err.type;
	if (typeof t === "string" && t in FOREIGN_TYPES) return FOREIGN_TYPES[t]!;
	// Moleculer's and Lattice's own (VALIDATION_ERROR, LATTICE_FORBIDDEN…) pass; lower-case library codes do not.
	if (typeof t === "string" && /^[A-Z][A-Z0-9_]*$/.test(t)) return t;
	return BY_STATUS[code] ?? (code < 500 ? ErrorType.BAD_REQUEST : ErrorType.INTERNAL);
}

// body-parser's error types (http-errors `type`), for the ones whose status alone is ambiguous.
const BODY_ERROR_TYPES: Record<string, string> = {
	"entity.too.large": ErrorType.PAYLOAD_TOO_LARGE,
	"encoding.unsupported": ErrorType.UNSUPPORTED_MEDIA_TYPE,
	"charset.unsupported": ErrorType.UNSUPPORTED_MEDIA_TYPE
};

/**
 * JSON bodies only, compressed bodies refused (no inflating untrusted input). moleculer-web's own wiring turns a
 * parser error carrying a string `code` (a truncated upload's ECONNABORTED, a zlib failure) into a 500; here
 * every body error keeps body-parser's own 4xx status.
 */
function jsonBody(limit: number): RouteMiddleware {
	const parse = bodyParser.json({ strict: true, limit, inflate: false, type: req => JSON_TYPE.test(req.headers["content-type"] ?? "") });
	return function json(req, res, next) {
		parse(req, res, (err?: { status?: number; type?: string; expose?: boolean; message?: string }) => {
			if (!err) return next();
			const status = typeof err.status === "number" && err.status >= 400 && err.status < 500 ? err.status : 400;
			const type = BODY_ERROR_TYPES[err.type ?? ""] ?? BY_STATUS[status] ?? ErrorType.BAD_REQUEST;
			next(new Errors.MoleculerClientError(err.expose && err.message ? err.message : "Malformed request body", status, type));
		});
	};
}

/**
 * Reads the request's credentials before moleculer-web applies the rate limit, so the limit can key on the
 * verified user. A bad token does not stop the request here: it is still counted against the client address,
 * then `authenticate` answers 401.
 */
function guard(this: ApiThis, req: GatewayRequest, _res: ServerResponse, next: Next): void {
	const hasBody = Number(req.headers["content-length"] ?? 0) > 0 || req.headers["transfer-encoding"] !== undefined;
	if (BODY_METHODS.has(req.method ?? "") && hasBody && !JSON_TYPE.test(req.headers["content-type"] ?? "")) {
		return next(new Errors.MoleculerClientError("Request bodies must be application/json", 415, ErrorType.UNSUPPORTED_MEDIA_TYPE));
	}
	req.$principal = null;
	const header = req.headers.authorization;
	if (header === undefined) return next();
	const m = BEARER.exec(header);
	if (!m) {
		req.$authError = unauthorized("Authorization must be 'Bearer <token>'", ErrorType.TOKEN_INVALID, { reason: "scheme" });
		return next();
	}
	this.verifyToken(m[1]!).then(
		principal => {
			req.$principal = principal;
			next();
		},
		(err: ErrorLike) => {
			if (err.code === 503) return next(err);
			req.$authError = err as Error;
			next();
		}
	);
}

/** The requests-per-window key: the verified user, else the client address (never a spoofable header). */
function rateLimitKey(req: GatewayRequest): string {
	return req.$principal ? `u:${req.$principal.id}` : `a:${req.$client ?? "unknown"}`;
}

/** Lattice's settings applied to one statically declared route: JSON body parser with its limit, CORS, rate limit. */
function secureRoute(route: RouteOptions, gateway: GatewaySettings, prefix: string): RouteOptions {
	const { rateLimit: limits, corsOrigins } = gateway;
	const limit = route.name === "login" ? limits.loginLimit : limits.limit;
	return {
		...route,
		bodyParsers: false,
		use: [jsonBody(gateway.bodyLimit), ...(route.use ?? [])],
		...(corsOrigins.length > 0
			? {
					cors: {
						origin: corsOrigins.includes("*") ? "*" : originMatcher(corsOrigins),
						methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
						allowedHeaders: ["Authorization", "Content-Type", "X-Request-ID"],
						exposedHeaders: ["X-Request-ID", "Retry-After", "X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"],
						credentials: false,
						maxAge: 600
					}
				}
			: {}),
		...(limit > 0
			? {
					rateLimit: {
						window: limits.windowMs,
						limit,
						headers: true,
						key: rateLimitKey,
						StoreFactory: rateLimitStoreFactory(limits.redis, `${prefix}${route.name ?? route.path}:`)
					}
				}
			: {})
	};
}

/**
 * HTTP gateway. Only what is aliased here is reachable from outside: `mappingPolicy: "restrict"` and no
 * auto-aliases, so adding an action to a service never publishes it by accident, and `$node.*` never is.
 * Every route authenticates (Bearer JWT, optional) and checks the target action's access declaration before
 * calling it; the serving node checks it again (middlewares/authorization.middleware.ts).
 */
const ApiService: GatewaySchema = {
	name: "api",
	mixins: [ApiGateway],

	settings: {
		port: 3000,
		ip: "0.0.0.0",
		path: "/",
		// Time allowed to receive a whole request; slow-drip clients are cut off (408).
		requestTimeout: 30_000,
		routes: [
			{
				name: "api",
				path: "/api",
				mappingPolicy: "restrict",
				autoAliases: false,
				authentication: true,
				authorization: true,
				use: [guard],
				aliases: {
					"GET /products": "products.list",
					"GET /products/:id": "products.get",
					"POST /products": "products.create",
					"PUT /products/:id": "products.update",
					"PATCH /products/:id": "products.update",
					"DELETE /products/:id": "products.remove",
					"GET /orders": "orders.list",
					"GET /orders/:id": "orders.get",
					"POST /orders": "orders.create",
					"GET /auth/me": "auth.me"
				},
				logging: true
			},
			// Its own route for its own, much smaller, per-address budget against password guessing.
			{
				name: "login",
				path: "/api/auth",
				mappingPolicy: "restrict",
				autoAliases: false,
				authentication: true,
				authorization: true,
				use: [guard],
				aliases: { "POST /login": "auth.login" },
				logging: true
			}
		] satisfies RouteOptions[],
		// Every request gets an id (the caller's, if it is sane) that comes back in X-Request-ID, errors included,
		// and the security headers; the client address is resolved once here for the rate limit.
		rootCallOptions(this: ApiThis, options: { requestID?: string }, req: GatewayRequest, res: ServerResponse) {
			const given = options.requestID;
			const id = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
			options.requestID = id;
			res.setHeader("X-Request-ID", id);
			// x-lattice-version pins the request's whole call tree to one version (middlewares/traffic-split.middleware.ts).
			const pin = req.headers["x-lattice-version"];
			if (typeof pin === "string" && /^[\w.-]{1,32}$/.test(pin)) {
				const o = options as { meta?: Record<string, unknown> };
				o.meta = { ...o.meta, latticeVersion: pin };
			}
			setSecurityHeaders(res, arrivedOverTls(req, this.proxies), this.gateway.hstsMaxAge);
			req.$client = clientAddress(req, this.proxies);
			traceHttpRequest(this.broker, options, req, res);
		},
		log4XXResponses: false,
		logRequest: "debug",
		logResponse: "debug"
	},

	// Routes can change what is published: nobody on the bus gets to do that at run time.
	actions: {
		addRoute: false,
		removeRoute: false
	},

	/** Applies Lattice's settings to the static routes before moleculer-web builds them. */
	merged(this: Service, schema: Schema) {
		const { gateway } = latticeSettings(this.broker);
		const prefix = `lattice-${this.broker.namespace || "default"}-rl-`;
		const routes = (schema.settings?.routes ?? []) as RouteOptions[];
		schema.settings = {
			...schema.settings,
			port: gateway.port,
			ip: gateway.host,
			routes: routes.map(r => secureRoute(r, gateway, prefix))
		};
	},

	created() {
		this.secureServer();
	},

	stopped() {
		return this.closeRateLimitStores();
	},

	methods: {
		/** Token verifier, proxy list and the HTTP server's own limits; refuses to start without a JWT key in production. */
		secureServer(this: ApiThis) {
			const { gateway, auth, production } = latticeSettings(this.broker);
			const keys = jwtKeys(auth.jwt, production);
			if (keys.ephemeral) this.logger.warn("No JWT key configured: tokens are checked against a random per-process secret (development only; set LATTICE_JWT_SECRET)");
			this.verifyToken = createTokenVerifier(keys, auth.jwt);
			this.gateway = gateway;
			this.proxies = trustedProxies(gateway.trustedProxies);
			this.rules = new WeakMap();
			this.server.headersTimeout = 20_000;
			// Node answers a Host-less HTTP/1.1 request itself with a bare 400 (no JSON, no request id); the gateway
			// does not use Host, so such requests are served like any other.
			(this.server as Server & { requireHostHeader: boolean }).requireHostHeader = false;
			this.server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => this.answerClientError(err, socket));
		},

		async closeRateLimitStores(this: ApiThis) {
			await Promise.all(this.routes.map(r => r.rateLimit?.store?.close()));
		},

		/** moleculer-web's `authentication: true` hook: the principal `guard` verified, or null (anonymous). */
		authenticate(this: ApiThis, _ctx: Context, _route: unknown, req: GatewayRequest): Principal | null {
			if (req.$authError) throw req.$authError;
			return req.$principal ?? null;
		},

		/**
		 * moleculer-web's `authorization: true` hook: the action's own declaration, checked here to answer 401/403
		 * without a trip to the serving node (which checks again). The gateway's calls carry `api` as caller.
		 */
		authorize(this: ApiThis, ctx: Context<unknown, { user?: Principal | null }>, _route: unknown, req: GatewayRequest) {
			const endpoint = req.$endpoint;
			if (!endpoint) return;
			let rule = this.rules.get(endpoint.action);
			if (!rule) {
				const service = endpoint.service?.fullName ?? endpoint.action.name?.split(".").slice(0, -1).join(".") ?? "";
				rule = compileRule(endpoint.action, service);
				this.rules.set(endpoint.action, rule);
			}
			const d = decide(rule, ctx.meta.user, this.fullName);
			if (!d.allow) throw denial(rule, d);
		},

		/** Adds the headers a client needs to act on an error: Retry-After on 429, WWW-Authenticate on 401. */
		sendError(this: ApiThis, req: GatewayRequest, res: ServerResponse, err: ErrorLike) {
			if (!res.headersSent) {
				if (err.code === 429) {
					const store = req.$route?.rateLimit?.store;
					const seconds = store ? Math.ceil((store.resetTime - Date.now()) / 1000) : 1;
					res.setHeader("Retry-After", String(Math.max(1, seconds)));
				} else if (err.code === 401) {
					res.setHeader("WWW-Authenticate", err.type === ErrorType.TOKEN_INVALID ? 'Bearer realm="lattice", error="invalid_token"' : 'Bearer realm="lattice"');
				}
			}
			return ApiGateway.methods!.sendError!.call(this, req, res, err);
		},

		/** One JSON error shape with a stable `type`; no stack, and no internals for server-side faults in production. */
		reformatError(this: ApiThis, err: ErrorLike, _req: IncomingMessage, res: ServerResponse) {
			const code = typeof err.code === "number" && err.code >= 400 && err.code < 600 ? err.code : 500;
			const requestId = res.getHeader("X-Request-ID");
			if (code >= 500 && latticeSettings(this.broker).production && !err.type) {
				return { name: "InternalError", message: "Internal server error", code, type: ErrorType.INTERNAL, requestId };
			}
			return { name: err.name, message: err.message, code, type: errorType(err, code), data: err.data, requestId };
		},

		/**
		 * Requests Node's HTTP parser refuses (oversized headers, malformed request lines, conflicting lengths,
		 * timeouts) never reach moleculer-web; answer them in the same JSON shape instead of Node's bare status line.
		 */
		answerClientError(this: ApiThis, err: NodeJS.ErrnoException, socket: Socket) {
			const pending = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
			if (err.code === "ECONNRESET" || !socket.writable || pending?.headersSent) {
				socket.destroy();
				return;
			}
			const code = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
			const requestId = randomUUID();
			const message = code === 431 ? "Request headers too large" : code === 408 ? "Request timeout" : "Malformed HTTP request";
			const body = JSON.stringify({ name: "ClientError", message, code, type: BY_STATUS[code] ?? ErrorType.BAD_REQUEST, requestId });
			const head = [
				`HTTP/1.1 ${code} ${STATUS_CODES[code]}`,
				"Content-Type: application/json; charset=utf-8",
				`Content-Length: ${Buffer.byteLength(body)}`,
				`X-Request-ID: ${requestId}`,
				...SECURITY_HEADERS.map(([name, value]) => `${name}: ${value}`),
				"Connection: close"
			];
			socket.end(`${head.join("\r\n")}\r\n\r\n${body}`);
		}
	}
};

export default ApiService;
