import { Errors } from "moleculer";
import { ErrorType } from "../errors.ts";

export function outOfStock(sku: string, qty: number, available: number): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(`Not enough '${sku}' in stock`, 409, ErrorType.OUT_OF_STOCK, { sku, qty, available });
}

/** The key's operation was compensated (released, refunded) before it happened: it must not happen now. */
export function cancelled(key: string): Errors.MoleculerClientError {
	return new Errors.MoleculerClientError(`Operation '${key}' was already cancelled`, 409, ErrorType.OPERATION_CANCELLED, { key });
}
