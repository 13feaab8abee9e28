import { readFileSync, writeFileSync } from "node:fs";
import { renderNatsAuthorization, type BusPolicy } from "./nats-permissions.ts";

/**
 * `npm run nats:permissions -- policy.json [out.conf]`: the nats-server `authorization` block for a bus policy
 * (see lib/nats-permissions.ts), on stdout or into `out.conf`.
 */
const [file, out] = process.argv.slice(2);
if (!file) {
	process.stderr.write("usage: npm run nats:permissions -- <policy.json> [out.conf]\n");
	process.exit(2);
}
try {
	const text = renderNatsAuthorization(JSON.parse(readFileSync(file, "utf8")) as BusPolicy, file);
	if (out) writeFileSync(out, text);
	else process.stdout.write(text);
} catch (err) {
	process.stderr.write(`nats:permissions: ${(err as Error).message}\n`);
	process.exit(1);
}
