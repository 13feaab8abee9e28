import { Errors } from "moleculer";

/**
 * Stable error `type` codes. Clients match on these, so a value never changes once released;
 * add new codes instead. Moleculer's own types (VALIDATION_ERROR, REQUEST_TIMEOUT, SERVICE_NOT_FOUND…)
 * pass through unchanged.
 */
export const ErrorType = {
	CONFIG_INVALID: "LATTICE_CONFIG_INVALID",
	NOT_FOUND: "LATTICE_NOT_FOUND",
	VERSION_CONFLICT: "LATTICE_VERSION_CONFLICT",
	ROUTE_NOT_FOUND: "LATTICE_ROUTE_NOT_FOUND",
	BAD_REQUEST: "LATTICE_BAD_REQUEST",
	PAYLOAD_TOO_LARGE: "LATTICE_PAYLOAD_TOO_LARGE",
	INTERNAL: "LATTICE_INTERNAL",
	/** 401: no credentials where the action needs a caller. */
	UNAUTHORIZED: "LATTICE_UNAUTHORIZED",
	/** 401: a token was presented but is malformed, forged, expired or meant for someone else. */
	TOKEN_INVALID: "LATTICE_TOKEN_INVALID",
	/** 401: wrong username or password at login. */
	LOGIN_FAILED: "LATTICE_LOGIN_FAILED",
	/** 404: this deployment issues no tokens (they come from an external identity provider). */
	LOGIN_DISABLED: "LATTICE_LOGIN_DISABLED",
	/** 503: the identity provider's key set cannot be fetched, so no token can be checked. */
	AUTH_UNAVAILABLE: "LATTICE_AUTH_UNAVAILABLE",
	/** 403: the caller is known but lacks the permission, role or service grant the action declares. */
	FORBIDDEN: "LATTICE_FORBIDDEN",
	/** 403: a browser origin outside LATTICE_CORS_ORIGINS. */
	ORIGIN_NOT_ALLOWED: "LATTICE_ORIGIN_NOT_ALLOWED",
	/** 415: a request body that is not JSON. */
	UNSUPPORTED_MEDIA_TYPE: "LATTICE_UNSUPPORTED_MEDIA_TYPE",
	/** 429: the client's request budget for the window is spent (see Retry-After). */
	RATE_LIMITED: "LATTICE_RATE_LIMITED",
	/** 431: request headers over the HTTP server's limit. */
	HEADERS_TOO_LARGE: "LATTICE_HEADERS_TOO_LARGE",
	/** 408: the client took too long to send its request. */
	REQUEST_TIMEOUT: "LATTICE_REQUEST_TIMEOUT",
	/** 503: the node is at its concurrency limit and its queue is full (or the wait ran out): retry elsewhere or later. */
	OVERLOADED: "LATTICE_OVERLOADED",
	/** A failure injected on purpose by the fault-injection middleware (LATTICE_FAULTS). */
	FAULT_INJECTED: "LATTICE_FAULT_INJECTED",
	/** 503: what the call needs (a cloud node, a node in the caller's site, another site) is cut off from here right now. */
	UNREACHABLE: "LATTICE_UNREACHABLE",
	/** 503: the site's outbox (its NATS server's JetStream) did not take the fact: nothing was stored, send it again. */
	OUTBOX_UNAVAILABLE: "LATTICE_OUTBOX_UNAVAILABLE",
	/** 503: the channel (JetStream, or the in-process fallback while stopping) did not store the message: send it again. */
	CHANNEL_UNAVAILABLE: "LATTICE_CHANNEL_UNAVAILABLE",
	/** A saga step did not finish within its timeout (it may still have taken effect: it is compensated). */
	SAGA_STEP_TIMEOUT: "LATTICE_SAGA_STEP_TIMEOUT",
	/** 409: an operation whose idempotency key was already compensated (released, refunded) cannot happen any more. */
	OPERATION_CANCELLED: "LATTICE_OPERATION_CANCELLED",
	/** 409: not enough stock for the reservation. */
	OUT_OF_STOCK: "LATTICE_OUT_OF_STOCK",
	/** 403: broker-enforced mode, NATS refused the publish: this unit's bus policy does not let it call that action. */
	BUS_FORBIDDEN: "LATTICE_BUS_FORBIDDEN"
} as const;

export type ErrorTypeCode = (typeof ErrorType)[keyof typeof ErrorType];

export function configError(message: string, data?: unknown): Errors.MoleculerError {
	return new Errors.MoleculerError(message, 500, ErrorType.CONFIG_INVALID, data);
}

export function notFound(what: string, id: unknown): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(`${what} not found`, 404, ErrorType.NOT_FOUND, { id });
}

export function unauthorized(message: string, type: ErrorTypeCode = ErrorType.UNAUTHORIZED, data?: unknown): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(message, 401, type, data);
}

export function forbidden(message: string, data?: unknown): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(message, 403, ErrorType.FORBIDDEN, data);
}

/** Retryable: the caller may try again once the link is back. */
export function unreachable(message: string, data?: unknown): Errors.MoleculerRetryableError {
	return new Errors.MoleculerRetryableError(message, 503, ErrorType.UNREACHABLE, data);
}
