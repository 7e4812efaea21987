import tseslint from 'typescript-eslint';

export default tseslint.config({ ignores: ['dist/**', 'node_modules/**'] }, ...tseslint.configs.recommendedTypeChecked, {
  languageOptions: {
    parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
  },
  rules: {
    '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    '@typescript-eslint/no-non-null-assertion': 'off',
    // node:test runs describe/it/test itself and reports their failures; awaiting them is not needed
    '@typescript-eslint/no-floating-promises': [
      'error',
      {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }],
      },
    ],
    // a graph Value prints as "name: dtype[shape]" (its own toString), which is what error messages want
    '@typescript-eslint/restrict-template-expressions': [
      'error',
      {
        allow: [
          { from: 'lib', name: ['Error', 'URL', 'URLSearchParams'] },
          { from: 'file', name: 'Value', path: 'src/graph/graph.ts' },
        ],
        allowAny: true,
        allowBoolean: true,
        allowNullish: true,
        allowNumber: true,
        allowRegExp: true,
      },
    ],
  },
});
