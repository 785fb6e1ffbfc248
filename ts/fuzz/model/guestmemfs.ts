// guestmemfs as the model sees it (persistence-rfc.md §2): 2 MiB blocks, a block map per file,
// what keeps an inode alive (a name, an fd, a mapping, a persistent area's long-term pin, a
// MAP_FILE's reference), and the VMM's create / truncate / unlink / mmap of its files.
import { MAP_FIXED, MAP_SHARED, O_CREAT, O_RDWR } from '../../index.js';
import { PAGE } from '../intervals.js';
import { allPages } from './mm.js';
import {
  BLOCK,
  CHUNK_PAGES,
  errs,
  FILE_STRIDE,
  hex,
  MInode,
  MNT,
  okAny,
  okv,
  pageOf,
  RWP,
  VA_FILE,
  type Alt,
  type ModelState,
  type Obs,
  type Plan,
} from './state.js';

// ---- accounting ----

/** Long-term pins of an inode: one per persistent area segment mapping it. */
export function ltPins(m: ModelState, inode: MInode): number {
  let n = 0;
  for (const ctx of m.liveCtxs()) {
    if (!ctx.pid) continue;
    for (const o of ctx.objs.values()) if (o.t === 'ioas') for (const a of o.areas) if (a.segs) for (const s of a.segs) if (s.inode === inode) n++;
  }
  return n;
}

/** An IOAS_MAP_FILE iopt_pages holds a reference on its file (iopt_alloc_file_pages: get_file). */
export function fileRefs(m: ModelState, inode: MInode): boolean {
  for (const p of allPages(m)) if (p.kind === 'file' && p.file === inode) return true;
  return false;
}

export function inodeAlive(m: ModelState, i: MInode): boolean {
  return i.linked || i.fdHeld || i.vmaHeld || ltPins(m, i) > 0 || fileRefs(m, i);
}

/** Drops inodes nobody reaches any more. */
export function reapInodes(m: ModelState): void {
  for (const i of [...m.inodes]) if (!inodeAlive(m, i)) m.inodes.delete(i);
}

/** Free blocks: the carve-out minus metadata, files (with their mappings block) and pinned orphans. */
export function gmFreeBlocks(m: ModelState): number {
  const total = m.cfg.guestmemfsMiB / 2;
  let used = 1;
  const held = new Set<number>();
  for (const i of m.inodes) {
    if (!inodeAlive(m, i)) continue;
    if (i.blocks.length) used += i.blocks.length + 1;
    for (const b of i.blocks) held.add(b);
  }
  // Blocks no file holds any more but a domain still maps.
  const gmChunks = m.gmChunks;
  for (const p of allPages(m)) for (const id of p.res.values()) {
    const c = Math.floor(id / CHUNK_PAGES);
    if (gmChunks.has(c) && !held.has(c)) {
      held.add(c);
      used++;
    }
  }
  return total - used;
}

// ---- the VMM's files ----

export function* planGmCreate(m: ModelState, f: number): Generator<Plan, void, void> {
  const name = `f${f}`;
  if (m.names.has(name)) return; // O_CREAT of an existing name just opens it: not exercised
  if (m.fileFds[f]) yield* planCloseFile(m, f);
  const fd = m.peekFd();
  const path = `${MNT}/${name}`;
  yield {
    what: `open ${path} O_CREAT`,
    run: (s) => s.p.open(path, O_CREAT | O_RDWR, 0o600),
    alts: m.khoActive
      ? [errs(['EBUSY'])]
      : [okv(fd, () => {
          m.allocFd();
          const inode = new MInode(m.nextInode++, name);
          m.names.set(name, inode);
          m.inodes.add(inode);
          m.fileFds[f] = { fd, inode };
        })],
  };
}

/** The VMM unmaps and closes the file it holds in slot `f`. */
export function* planCloseFile(m: ModelState, f: number): Generator<Plan, void, void> {
  const old = m.fileFds[f];
  if (!old) return;
  yield* planMunmapFile(m, f);
  yield {
    what: `close ${old.inode.name} fd ${old.fd}`,
    run: (s) => s.p.close(old.fd),
    alts: [okAny(() => {
      m.freeFd(old.fd);
      old.inode.fdHeld = false;
      m.fileFds[f] = null;
      reapInodes(m);
    })],
  };
}

export function* planGmTruncate(m: ModelState, f: number, blocks: number): Generator<Plan, void, void> {
  const slot = m.fileFds[f];
  if (!slot) return;
  const inode = slot.inode;
  const cur = inode.blocks.length;
  const size = BigInt(blocks) * BLOCK;
  const alts = ((): Alt[] => {
    if (m.khoActive) return blocks === cur ? [errs(['EBUSY']), okAny()] : [errs(['EBUSY'])];
    if (blocks === cur) return [okAny()];
    if (blocks < cur && ltPins(m, inode) > 0) return [errs(['EBUSY'])];
    if (blocks > cur) {
      const need = blocks - cur + (cur === 0 ? 1 : 0);
      if (need > gmFreeBlocks(m)) return [errs(['ENOMEM'])];
    }
    return [okAny(() => {
      if (blocks > cur) for (let b = cur; b < blocks; b++) {
        const c = m.chunk();
        m.gmChunks.add(c);
        inode.blocks.push(c);
      }
      else inode.blocks.length = blocks;
    })];
  })();
  let changed = false as boolean;
  yield {
    what: `ftruncate ${inode.name} to ${blocks} blocks`,
    run: (s) => s.p.ftruncate(slot.fd, size),
    alts: alts.map((a) => ({ ...a, then: (o: Obs) => { a.then?.(o); changed = o.t === 'ok' && blocks !== cur; } })),
  };
  if (!changed) return;
  // The VMM maps the file as long as it is.
  yield* planMunmapFile(m, f);
  if (blocks > 0) yield* planMmapFile(m, f);
}

export function* planGmUnlink(m: ModelState, f: number): Generator<Plan, void, void> {
  const name = `f${f}`;
  const inode = m.names.get(name);
  const path = `${MNT}/${name}`;
  const alts = ((): Alt[] => {
    if (!inode) return m.khoActive ? [errs(['ENOENT', 'EBUSY'])] : [errs(['ENOENT'])];
    if (m.khoActive) return [errs(['EBUSY'])];
    if (ltPins(m, inode) > 0) return [errs(['EBUSY'])];
    return [okAny(() => {
      inode.linked = false;
      m.names.delete(name);
      reapInodes(m);
    })];
  })();
  yield { what: `unlink ${path}`, run: (s) => s.p.unlink(path), alts };
}

export function* planMmapFile(m: ModelState, f: number): Generator<Plan, void, void> {
  const slot = m.fileFds[f]!;
  const va = VA_FILE + BigInt(f) * FILE_STRIDE;
  const len = BigInt(slot.inode.blocks.length) * BLOCK;
  yield {
    what: `mmap ${slot.inode.name} (${len >> 20n} MiB) at ${hex(va)}`,
    run: (s) => s.p.mmap(va, len, RWP, MAP_SHARED | MAP_FIXED, slot.fd),
    alts: [okv(va, () => {
      m.vmas.push({ startPg: pageOf(va), npages: Number(len / PAGE), kind: 'file', chunks: [], file: slot.inode });
      slot.inode.vmaHeld = true;
    })],
  };
}

export function* planMunmapFile(m: ModelState, f: number): Generator<Plan, void, void> {
  const va = VA_FILE + BigInt(f) * FILE_STRIDE;
  const i = m.vmas.findIndex((v) => v.startPg === pageOf(va));
  if (i < 0) return;
  const v = m.vmas[i]!;
  yield {
    what: `munmap ${hex(va)}`,
    run: (s) => s.p.munmap(va, BigInt(v.npages) * PAGE),
    alts: [okAny(() => {
      m.vmas.splice(i, 1);
      if (v.file instanceof MInode) {
        v.file.vmaHeld = m.vmas.some((x) => x.file === v.file);
        reapInodes(m);
      }
    })],
  };
}
