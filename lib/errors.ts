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
	INTERNAL: "LATTICE_INTERNAL"
} as const;

export type ErrorTypeCode = (typeof ErrorType)[keyof typeof ErrorType];

export function configError(message: string, data?: unknown): Errors.MoleculerError {
	return new Errors.MoleculerError(message, 500, ErrorType.CONFIG_INVALID, data);
}

export function notFound(what: string, id: unknown): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(`${what} not found`, 404, ErrorType.NOT_FOUND, { id });
}
