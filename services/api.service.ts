import type { IncomingMessage, ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import ApiGateway from "moleculer-web";
import type { ServiceSchema } from "moleculer";
import { latticeSettings } from "../lib/settings.ts";
import { ErrorType } from "../lib/errors.ts";

interface ErrorLike {
	name?: string;
	message?: string;
	code?: number;
	type?: string;
	data?: unknown;
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;


/**
 * HTTP gateway. Only what is aliased here is reachable from outside: `mappingPolicy: "restrict"` and no
 * auto-aliases, so adding an action to a service never publishes it by accident, and `$node.*` never is.
 */
const ApiService: ServiceSchema<Record<string, unknown>> = {
	name: "api",
	mixins: [ApiGateway],

	settings: {
		port: 3000,
		ip: "0.0.0.0",
		path: "/",
		routes: [
			{
				path: "/api",
				mappingPolicy: "restrict",
				autoAliases: false,
				bodyParsers: { json: { strict: true, limit: "256kb" }, urlencoded: false },
				aliases: {
					"GET /products": "products.list",
					"GET /products/:id": "products.get",
					"POST /products": "products.create",
					"PUT /products/:id": "products.update",
					"PATCH /products/:id": "products.update",
					"DELETE /products/:id": "products.remove"
				},
				logging: true
			}
		],
		// Every request gets an id (the caller's, if it is sane) that comes back in X-Request-ID, errors included.
		rootCallOptions(options: { requestID?: string }, req: IncomingMessage, res: ServerResponse) {
			const given = options.requestID;
			const id = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
			options.requestID = id;
			res.setHeader("X-Request-ID", id);
		},
		log4XXResponses: false,
		logRequest: "debug",
		logResponse: "debug"
	},

	created() {
		const { gateway } = latticeSettings(this.broker);
		this.settings.port = gateway.port;
		this.settings.ip = gateway.host;
	},

	methods: {
		/** One JSON error shape; no stack, and no internals for server-side faults in production. */
		reformatError(err: ErrorLike, _req: IncomingMessage, res: ServerResponse) {
			const code = typeof err.code === "number" && err.code >= 400 && err.code < 600 ? err.code : 500;
			const requestId = res.getHeader("X-Request-ID");
			if (code >= 500 && latticeSettings(this.broker).production && !err.type) {
				return { name: "InternalError", message: "Internal server error", code, type: ErrorType.INTERNAL, requestId };
			}
			const type = err.type ?? (code === 404 ? ErrorType.NOT_FOUND : code < 500 ? ErrorType.BAD_REQUEST : ErrorType.INTERNAL);
			return { name: err.name, message: err.message, code, type, data: err.data, requestId };
		},
	},
};

export default ApiService;
