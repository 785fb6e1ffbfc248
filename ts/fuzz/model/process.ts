// The VMM process: its set-up (guestmemfs mounted, a memfd and anonymous memory at fixed
// addresses, its files opened and mapped again) at boot, after an exit and after a kexec, and its
// exit, which releases everything it held.
import { MAP_ANONYMOUS, MAP_FIXED, MAP_SHARED, O_RDWR } from '../../index.js';
import { PAGE } from '../intervals.js';
import { unbindEffects } from './device.js';
import { planMmapFile, reapInodes } from './guestmemfs.js';
import { maybeDestroyCtx, releaseExcluded } from './iommufd.js';
import { syncPins } from './mm.js';
import {
  ANON_PAGES,
  FILE_SLOTS,
  hex,
  MEMFD_PAGES,
  MInode,
  MMemfd,
  MNT,
  okAny,
  okv,
  pageOf,
  RWP,
  VA_ANON,
  VA_MEMFD,
  type ModelState,
  type Plan,
} from './state.js';

/** The VMM's set-up: at boot, after its exit and after a kexec (it died with its kernel). */
export function* planSetup(m: ModelState): Generator<Plan, void, void> {
  if (!m.mounted) {
    yield { what: `mount guestmemfs ${MNT}`, run: (s) => s.p.mount('guestmemfs', MNT), alts: [okAny(() => (m.mounted = true))] };
  }
  const mfd = m.peekFd();
  yield { what: 'memfd_create', run: (s) => s.p.memfd_create('fuzz-memfd'), alts: [okv(mfd, () => { m.allocFd(); m.memfd = { fd: mfd, obj: new MMemfd(m.chunk()) }; })] };
  yield { what: 'ftruncate memfd 2 MiB', run: (s) => s.p.ftruncate(mfd, BigInt(MEMFD_PAGES) * PAGE), alts: [okAny()] };
  yield {
    what: `mmap memfd at ${hex(VA_MEMFD)}`,
    run: (s) => s.p.mmap(VA_MEMFD, BigInt(MEMFD_PAGES) * PAGE, RWP, MAP_SHARED | MAP_FIXED, mfd),
    alts: [okv(VA_MEMFD, () => m.vmas.push({ startPg: pageOf(VA_MEMFD), npages: MEMFD_PAGES, kind: 'memfd', chunks: [m.memfd!.obj.chunk], file: m.memfd!.obj }))],
  };
  yield {
    what: `mmap anonymous at ${hex(VA_ANON)}`,
    run: (s) => s.p.mmap(VA_ANON, BigInt(ANON_PAGES) * PAGE, RWP, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED),
    alts: [okv(VA_ANON, () => m.vmas.push({ startPg: pageOf(VA_ANON), npages: ANON_PAGES, kind: 'anon', chunks: [m.chunk(), m.chunk()], file: null }))],
  };
  for (let f = 0; f < FILE_SLOTS; f++) {
    const inode = m.names.get(`f${f}`);
    if (!inode) continue;
    const fd = m.peekFd();
    yield {
      what: `open ${MNT}/f${f}`,
      run: (s) => s.p.open(`${MNT}/f${f}`, O_RDWR),
      alts: [okv(fd, () => { m.allocFd(); inode.fdHeld = true; m.fileFds[f] = { fd, inode }; })],
    };
    if (inode.blocks.length) yield* planMmapFile(m, f);
  }
}

/** The VMM exits (its fds, mappings and devices go) and a new one is set up. */
export function* planExit(m: ModelState): Generator<Plan, void, void> {
  if (m.slots.some((c) => c && !c.dead && releaseExcluded(c)) || m.devices.some((d) => d.fd !== null && releaseExcluded(d.bound?.ctx))) return;
  if (m.luoExitBlocked()) return;
  yield {
    what: 'exit the VMM',
    run: (s) => s.p.exit(),
    alts: [okAny(() => {
      for (const h of m.exitFirstHooks) h();
      for (let i = 0; i < m.devices.length; i++) if (m.devices[i]!.fd !== null) unbindEffects(m, i);
      for (const ctx of m.slots) {
        if (!ctx || ctx.dead) continue;
        ctx.fd = null;
        ctx.slot = null;
        maybeDestroyCtx(m, ctx);
      }
      m.slots = [];
      for (const s of m.fileFds) if (s) s.inode.fdHeld = false;
      m.fileFds = [];
      for (const v of m.vmas) if (v.file instanceof MInode) v.file.vmaHeld = false;
      m.vmas = [];
      m.memfd = null;
      m.fds = new Set();
      for (const h of m.exitHooks) h();
      syncPins(m);
      reapInodes(m);
    })],
  };
  yield { what: 'spawn the VMM', run: (s) => void (s.p = s.host.kernel.spawn()), alts: [okAny()] };
  yield* planSetup(m);
}
