// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
	{ ignores: ["node_modules/**", "coverage/**", ".bench/**", ".scratch*/**"] },
	js.configs.recommended,
	...tseslint.configs.recommended,
	{
		languageOptions: { globals: { process: "readonly", console: "readonly" } },
		rules: {
			"no-console": "error",
			"@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
			"@typescript-eslint/consistent-type-imports": "error"
		}
	},
	{
		// process.env is read in one place only: moleculer.config.ts (and the test/bench harnesses that spawn nodes).
		files: ["services/**", "mixins/**", "middlewares/**", "lib/**"],
		rules: {
			"no-restricted-properties": ["error", { object: "process", property: "env", message: "Read settings in moleculer.config.ts and pass them as options." }]
		}
	}
);
