#!/usr/bin/env bash
# The package as a user gets it (issue #14): `npm pack` (prepack builds src alone, with
# stripInternal), arethetypeswrong on the tarball (ESM only), then a scratch project installs the
# tarball and type-checks tools/consumer/index.ts against it (strict, NodeNext, skipLibCheck off,
# so the shipped .d.ts files must compile too), and imports it at run time.
# Rebuilds dist from src only: run it after the tests (`npm run build` restores the full dist).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm pack --silent --pack-destination "$tmp" >/dev/null
tgz=$(ls "$tmp"/sworm-*.tgz)
echo "packed $(basename "$tgz"): $(tar tzf "$tgz" | wc -l) files"
if tar tzf "$tgz" | grep -qE 'package/dist/(test|bench|demo|tools)/|package/dist/src/(testkit|internal)'; then
  echo "the tarball ships test, bench, demo, tool or internal files:" >&2
  tar tzf "$tgz" | grep -E 'package/dist/(test|bench|demo|tools)/|package/dist/src/(testkit|internal)' | head >&2
  exit 1
fi
npx attw "$tgz" --profile esm-only
cp -r tools/consumer "$tmp/consumer"
cd "$tmp/consumer"
npm install --silent --no-audit --no-fund "$tgz" "@types/node@$(node -p "require('$root/node_modules/@types/node/package.json').version")" >/dev/null
node "$root/node_modules/typescript/bin/tsc" -p tsconfig.json
node --input-type=module -e "const m = await import('sworm'); if (typeof m.Sworm.start !== 'function') throw new Error('no Sworm.start'); console.log('the consumer type-checks and imports sworm:', Object.keys(m).length, 'exports')"
