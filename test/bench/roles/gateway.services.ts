import ApiGateway from "moleculer-web";
import type { ServiceSchema } from "moleculer";
import ApiService from "../../../services/api.service.ts";
import ProductsService from "../../../services/products.service.ts";

type Schema = ServiceSchema<Record<string, unknown>>;

interface Route {
	aliases?: Record<string, string>;
	[option: string]: unknown;
}

// Both gateways serve protocol.ts's HELLO_PATH and PRODUCTS_PATH, with the same products service: only the
// framework around it differs.

/** Lattice's real gateway schema with one alias added for the trivial action. */
export function latticeGateway(): Schema[] {
	const routes = ApiService.settings?.routes as Route[];
	const [api, ...rest] = routes;
	const withHello: Route = { ...api, aliases: { ...api?.aliases, "GET /hello": "bench.hello" } };
	const gateway = { ...ApiService, settings: { ...ApiService.settings, routes: [withHello, ...rest] } };
	return [gateway, ProductsService];
}

/** moleculer-web as its README shows it: one route, two aliases. */
export function bareGateway(port: number): Schema[] {
	const gateway: Schema = {
		name: "api",
		mixins: [ApiGateway],
		settings: {
			port,
			ip: "127.0.0.1",
			routes: [{ path: "/api", aliases: { "GET /hello": "bench.hello", "GET /products": "products.list" } }]
		}
	};
	return [gateway, ProductsService];
}
