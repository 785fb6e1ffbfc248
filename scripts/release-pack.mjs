// `npm run release:pack [-- --out <dir>]`: a release as napi-rs packages ship, as tarballs in <dir>
// (default .tmp/release): one per platform package (npm/<platform>/, here linux-x64-gnu, holding
// only its .node) and the main package, whose optionalDependencies name every platform package at
// its own version (`napi pre-publish`). Publishing is then `npm publish` of each tarball, platform
// packages first. Prints the tarball paths, one per line, main last.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { out: { type: 'string', default: join(root, '.tmp', 'release') } } });
const out = resolve(values.out);
const log = (msg) => process.stderr.write(`[release-pack] ${msg}\n`);

function run(cmd, args, opts = {}) {
  const res = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], ...opts });
  if (res.status !== 0) {
    log(`error: ${[cmd, ...args].join(' ')} failed (${res.error?.message ?? res.signal ?? `exit ${res.status}`})`);
    process.exit(1);
  }
  return res.stdout;
}

const napi = [join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')];
const pkgPath = join(root, 'package.json');
mkdirSync(out, { recursive: true });

// 1. The addon and dist/, fresh.
run(process.execPath, ['scripts/build-native.mjs'], { stdio: 'inherit' });
run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { stdio: 'inherit' });

// 2. Platform packages: `napi create-npm-dirs` writes npm/<platform>/package.json from the `napi`
//    config; each gets the binary built here (`napi artifacts` does this from CI downloads).
run(process.execPath, [...napi, 'create-npm-dirs']);
const tarballs = [];
for (const dir of readdirSync(join(root, 'npm'))) {
  const platformPkg = JSON.parse(readFileSync(join(root, 'npm', dir, 'package.json'), 'utf8'));
  const binary = join(root, 'native', platformPkg.main);
  if (!existsSync(binary)) {
    log(`skipping npm/${dir}: native/${platformPkg.main} is not built on this machine (build it on a ${dir} host)`);
    continue;
  }
  copyFileSync(binary, join(root, 'npm', dir, platformPkg.main));
  tarballs.push(join(out, run('npm', ['pack', '--silent', '--pack-destination', out], { cwd: join(root, 'npm', dir) }).trim().split('\n').pop()));
}

// 3. The main package with its optionalDependencies, as `napi pre-publish` writes them (it also
//    checks the versions agree). It runs on a copy of package.json and the result goes into the
//    packed tarball only: the repository's package.json names no package that exists only once
//    published, and is never rewritten (tests read it while this runs).
mkdirSync(join(root, '.tmp'), { recursive: true });
const stage = mkdtempSync(join(root, '.tmp', 'release-stage-')); // in the repository: pre-publish reads git
try {
  copyFileSync(pkgPath, join(stage, 'package.json'));
  cpSync(join(root, 'npm'), join(stage, 'npm'), { recursive: true });
  run(process.execPath, [...napi, 'pre-publish', '--cwd', stage, '--skip-optional-publish', '-t', 'npm'], { stdio: ['ignore', 'inherit', 'inherit'] });
  const optional = JSON.parse(readFileSync(join(stage, 'package.json'), 'utf8')).optionalDependencies ?? {};
  log(`optionalDependencies: ${JSON.stringify(optional)}`);
  const packed = join(stage, run('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', stage]).trim().split('\n').pop());
  run('tar', ['-xzf', packed, '-C', stage]);
  const manifest = join(stage, 'package', 'package.json');
  writeFileSync(manifest, `${JSON.stringify({ ...JSON.parse(readFileSync(manifest, 'utf8')), optionalDependencies: optional }, null, 2)}\n`);
  const tarball = join(out, packed.slice(packed.lastIndexOf('/') + 1));
  run('tar', ['-czf', tarball, '-C', stage, 'package']);
  tarballs.push(tarball);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
process.stdout.write(`${tarballs.join('\n')}\n`);
