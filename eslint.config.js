// ESLint flat config: typescript-eslint's type-aware rules and the import boundaries of STYLE.md.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const boundary = (from, banned, message) => ({
  files: [`src/${from}/**/*.ts`],
  rules: {
    'no-restricted-imports': ['error', { patterns: banned.map((dir) => ({ group: [`**/${dir}/*`], message })) }],
  },
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bin/**', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }] },
      ],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Plain Node scripts outside the TypeScript project (scripts/*.mjs): linted without type information.
    files: ['scripts/**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: 'readonly', console: 'readonly', URL: 'readonly' },
    },
  },
  {
    // Test doubles implement async interfaces (oidc-provider's adapter) without awaiting anything.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },
  boundary('core', ['authz', 'gateway', 'main', 'store', 'telemetry'], 'core/ is pure: no doors, stores or telemetry.'),
  boundary('authz', ['gateway', 'main'], 'The two doors never import each other, and nothing imports main/.'),
  boundary('gateway', ['authz', 'main'], 'The two doors never import each other, and nothing imports main/.'),
  boundary('config', ['authz', 'gateway', 'main', 'authorizer'], 'config/ is loaded by main/, it does not reach the doors.'),
  boundary('identity', ['authz', 'gateway', 'main'], 'identity/ is shared below the doors.'),
  boundary('policy', ['authz', 'gateway', 'main'], 'policy/ is shared below the doors.'),
  boundary('routing', ['authz', 'gateway', 'main'], 'routing/ is shared below the doors.'),
  boundary('authorizer', ['authz', 'gateway', 'main'], 'authorizer/ is shared below the doors.'),
);
