/** The two request bodies every remote cell is run with. */

export const SMALL_PAYLOAD = { a: 1, b: "hello" } as const;

function kibPayload(): Record<string, unknown> {
	const body: Record<string, unknown> = {
		id: "4f2c9a1e-7b3d-4c8e-9f10-2a6b5d8e1c37",
		customer: { id: 123456, name: "Ada Lovelace", email: "ada@example.com", tier: "gold" },
		items: Array.from({ length: 6 }, (_, i) => ({ sku: `SKU-${1000 + i}`, qty: i + 1, price: 9.99 + i, tags: ["a", "b"] })),
		note: ""
	};
	// Pad a string field so the JSON text is exactly 1 KiB: the size the published sidecar figures use.
	const missing = 1024 - Buffer.byteLength(JSON.stringify(body));
	body.note = "x".repeat(Math.max(0, missing));
	return body;
}

export const KIB_PAYLOAD = kibPayload();

export type PayloadName = "small" | "1KiB";

export const PAYLOADS: Record<PayloadName, unknown> = { small: SMALL_PAYLOAD, "1KiB": KIB_PAYLOAD };
