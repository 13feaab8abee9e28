import type { ParamsSpec } from "../protocol.ts";

/** Yields the params of each successive call of a run. */
export function paramsSource(spec: ParamsSpec): () => unknown {
	switch (spec.kind) {
		case "fixed":
			return () => spec.value;
		case "cycle": {
			let i = 0;
			return () => ({ id: i++ % spec.keys });
		}
		case "unique": {
			let i = 0;
			return () => ({ id: `${spec.prefix}-${i++}` });
		}
	}
}
