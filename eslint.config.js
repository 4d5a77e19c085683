// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "dist/", ".test-results/", "charts/", "crds/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // Plain JavaScript entry points run on Node.
    files: ["**/*.mjs", "**/*.js"],
    languageOptions: {
      globals: {
        process: "readonly",
        console: "readonly",
        Buffer: "readonly",
        setTimeout: "readonly",
        setImmediate: "readonly",
        URL: "readonly",
      },
    },
  },
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  // Dependencies point one way: the agent and the operator use common/, never each other, and
  // common/ uses neither (nor bin/, which composes both). These catch direct imports as you
  // type; test/unit/import-boundaries.test.ts follows chains of imports, dynamic ones too.
  ...boundary("node-agent", ["operator"]),
  ...boundary("operator", ["node-agent"]),
  ...boundary("common", ["operator", "node-agent", "bin"]),
);

/**
 * Forbids files under `part/` to import from the top-level folders `forbidden`.
 * @param {string} part
 * @param {string[]} forbidden
 */
function boundary(part, forbidden) {
  return [
    {
      files: [`${part}/**/*.ts`],
      rules: {
        "no-restricted-imports": [
          "error",
          {
            patterns: [
              {
                regex: `^(\\.\\./)+(${forbidden.join("|")})/`,
                message: `${part}/ must not import ${forbidden.map((f) => `${f}/`).join(", ")} (dependencies point one way: test/unit/import-boundaries.test.ts).`,
              },
            ],
          },
        ],
      },
    },
  ];
}
