// One tool for lint and format rules: ESLint with typescript-eslint and @stylistic.
import js from '@eslint/js';
import stylistic from '@stylistic/eslint-plugin';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'demo-data/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  stylistic.configs.customize({ indent: 2, quotes: 'single', semi: true, braceStyle: '1tbs', arrowParens: true, jsx: false }),
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@stylistic/max-len': ['error', { code: 160, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreComments: true }],
      '@stylistic/operator-linebreak': 'off',
      '@stylistic/multiline-ternary': 'off',
      '@stylistic/indent-binary-ops': 'off',
      '@stylistic/quotes': ['error', 'single', { avoidEscape: true }],
      '@stylistic/quote-props': ['error', 'as-needed'],
      '@stylistic/lines-between-class-members': ['error', 'always', { exceptAfterSingleLine: true }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // `total += await f()` adds to the total read before the await: lost updates when jobs run
    // concurrently (the engine's sync jobs do)
    files: ['src/**/*.ts'],
    rules: { 'require-atomic-updates': ['error', { allowProperties: true }] },
  },
  {
    // Determinism in the core (shared/DESIGN.md): md/, raid/ and cluster/ get time and
    // randomness injected (env/clock.ts, env/random.ts) so the simulator can replay a run
    // from a seed; a global clock or random source here would make a replay diverge.
    files: ['src/md/**/*.ts', 'src/raid/**/*.ts', 'src/cluster/**/*.ts'],
    ignores: ['src/raid/parity/**', 'src/raid/offload/**', 'src/raid/bulk*.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'Date', property: 'now', message: 'inject a Clock (clock.wallMs / clock.nowMs)' },
        { object: 'Math', property: 'random', message: 'inject a Random (env/random.ts)' },
        { object: 'performance', property: 'now', message: 'inject a Clock (clock.nowMs)' },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'setTimeout', message: 'inject a Clock (clock.setTimer / clock.sleep)' },
        { name: 'setInterval', message: 'inject a Clock (clock.setTimer)' },
        { name: 'setImmediate', message: 'inject a Clock' },
      ],
      'no-restricted-syntax': ['error', { selector: "NewExpression[callee.name='Date']", message: 'inject a Clock (clock.wallMs)' }],
    },
  },
);
