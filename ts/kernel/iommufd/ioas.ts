// struct iommufd_ioas's commands (drivers/iommu/iommufd/ioas.c): ALLOC, IOVA_RANGES,
// ALLOW_IOVAS, MAP, MAP_FILE, COPY, UNMAP, CHANGE_PROCESS and NOIOMMU_GET_PA, and vfio_compat.c's
// IOMMU_VFIO_IOAS. The struct itself is in private.ts.
import { errno, KernelError } from '../../uapi/errno.js';
import * as U from '../../uapi/iommufd.js';
import type { Task } from '../file.js';
import type { GuestmemfsInode } from '../guestmemfs/guestmemfs.js';
import { MemfdFile } from '../memfd.js';
import { PAGE_SIZE } from '../mm.js';
import { ULONG_MAX, type IovaRange } from './io_pagetable.js';
import { IoptPages, type AccountMode, type PagesFile, type PinAccount } from './pages.js';
import { Ioas, type IommufdCtx, type Ucmd } from './private.js';

const PAGE = BigInt(PAGE_SIZE);
const U64_MAX = 0xffff_ffff_ffff_ffffn;
/** `SIZE_MAX - PAGE_SIZE`: the largest length `iopt_alloc_pages` accepts. */
const MAX_LENGTH = ULONG_MAX - PAGE;

const iommuProt = (flags: number) => ({ read: !!(flags & U.IOMMU_IOAS_MAP_READABLE), write: !!(flags & U.IOMMU_IOAS_MAP_WRITEABLE) });
const MAP_FLAGS = U.IOMMU_IOAS_MAP_FIXED_IOVA | U.IOMMU_IOAS_MAP_WRITEABLE | U.IOMMU_IOAS_MAP_READABLE;

/** IOMMU_IOAS_ALLOC (`iommufd_ioas_alloc_ioctl`). */
export function ioasAlloc(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_ioas_alloc>): void | KernelError {
  if (ucmd.cmd.flags) return new KernelError('EOPNOTSUPP', 'flags must be 0');
  const ioas = new Ioas(ictx);
  ictx.reserve(ioas);
  ucmd.cmd.out_ioas_id = ioas.id;
  try {
    ioas.register();
    ictx.respond(ucmd);
  } catch (e) {
    ictx.abort(ioas);
    throw e;
  }
  ictx.finalize(ioas);
}

/** IOMMU_IOAS_IOVA_RANGES (`iommufd_ioas_iova_ranges`). */
export function ioasIovaRanges(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_ioas_iova_ranges>): void | KernelError {
  const { cmd, u } = ucmd;
  if (cmd.__reserved) return new KernelError('EOPNOTSUPP', '__reserved must be 0');
  const ioas = ictx.findIoas(cmd.ioas_id);
  if (ioas instanceof KernelError) return ioas;
  const max = cmd.num_iovas;
  const ranges = cmd.allowed_iovas;
  let num = 0;
  cmd.out_iova_alignment = ioas.iopt.iovaAlignment;
  for (const hole of ioas.iopt.allowedHoles()) {
    if (num < max) u.write(ranges + BigInt(num) * 16n, rangeBytes(hole));
    num++;
  }
  cmd.num_iovas = num;
  ictx.respond(ucmd);
  if (num > max) return new KernelError('EMSGSIZE', `${num} ranges, room for ${max}`);
}

/** IOMMU_IOAS_ALLOW_IOVAS (`iommufd_ioas_allow_iovas`). */
export function ioasAllowIovas(ictx: IommufdCtx, { cmd, u }: Ucmd<typeof U.iommu_ioas_allow_iovas>): void {
  if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
  const ioas = ictx.ioas(cmd.ioas_id);
  const ranges: IovaRange[] = [];
  const base = cmd.allowed_iovas;
  for (let i = 0; i < cmd.num_iovas; i++) {
    const b = u.read(base + BigInt(i) * 16n, 16);
    const v = new DataView(b.buffer, b.byteOffset, 16);
    const r = { start: v.getBigUint64(0, true), last: v.getBigUint64(8, true) };
    if (r.start >= r.last) errno('EINVAL', `range ${i}: start must be below last`);
    if (ranges.some((o) => o.start <= r.last && o.last >= r.start)) errno('EINVAL', `range ${i} overlaps another`);
    ranges.push(r);
  }
  ioas.iopt.setAllowIova(ranges);
}

/** IOMMU_IOAS_MAP (`iommufd_ioas_map`). */
export function ioasMap(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_ioas_map>): void | KernelError {
  const { cmd, task } = ucmd;
  const flags = cmd.flags;
  if (flags & ~MAP_FLAGS || cmd.__reserved) return new KernelError('EOPNOTSUPP', 'unknown flags or __reserved set');
  const iova = cmd.iova;
  const length = cmd.length;
  const uptr = cmd.user_va;
  if (iova >= ULONG_MAX || length >= ULONG_MAX) return new KernelError('EOVERFLOW', 'iova or length too large');
  if (!(flags & (U.IOMMU_IOAS_MAP_READABLE | U.IOMMU_IOAS_MAP_WRITEABLE))) return new KernelError('EINVAL', 'neither READABLE nor WRITEABLE');
  const ioas = ictx.findIoas(cmd.ioas_id);
  if (ioas instanceof KernelError) return ioas;
  // RFC patch 12: a persistent context maps guestmemfs only (here: every VMA of the range).
  const files = ictx.persistentId ? persistentFiles(task, uptr, length) : [];
  // iopt_alloc_user_pages: uptr + length must not wrap, then iopt_alloc_pages judges the length.
  if (uptr + length > ULONG_MAX) return new KernelError('EOVERFLOW', 'user_va + length overflows');
  if (length === 0n || length > MAX_LENGTH) return new KernelError('EINVAL', 'bad length');
  // iopt_alloc_area_pages's checks (EEXIST, ...) change nothing: run first, a failing MAP then
  // has no pages to put back (building them cannot fail).
  const dst = ioas.iopt.mapIova(length, flags & U.IOMMU_IOAS_MAP_FIXED_IOVA ? iova : null, uptr);
  if (dst instanceof KernelError) return dst;
  const start = uptr & ~(PAGE - 1n);
  const npages = Number((uptr + length - start + PAGE - 1n) / PAGE);
  const pages = new IoptPages(
    { type: 'user', mm: task.mm, page: Number(start / PAGE) },
    start,
    npages,
    !!(flags & U.IOMMU_IOAS_MAP_WRITEABLE),
    ictx.iommufd.svc.pageRefs,
    ictx.accounter(task),
    files,
  );
  try {
    cmd.iova = ioas.iopt.mapPagesAt([{ pages, startByte: uptr - start, length }], dst, iommuProt(flags));
  } finally {
    pages.put();
  }
  // If the iova cannot be written back the call fails with EFAULT, and the mapping stays.
  ictx.respond(ucmd);
}

/** IOMMU_IOAS_MAP_FILE (`iommufd_ioas_map_file`). */
export function ioasMapFile(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_ioas_map_file>): void | KernelError {
  const { cmd, task } = ucmd;
  const flags = cmd.flags;
  if (flags & ~MAP_FLAGS) return new KernelError('EOPNOTSUPP', 'unknown flags');
  const iova = cmd.iova;
  const length = cmd.length;
  const fstart = cmd.start;
  if (iova >= ULONG_MAX || length >= ULONG_MAX) return new KernelError('EOVERFLOW', 'iova or length too large');
  if (!(flags & (U.IOMMU_IOAS_MAP_READABLE | U.IOMMU_IOAS_MAP_WRITEABLE))) return new KernelError('EINVAL', 'neither READABLE nor WRITEABLE');
  const ioas = ictx.findIoas(cmd.ioas_id);
  if (ioas instanceof KernelError) return ioas;
  // iopt_map_file_pages: the range is judged before the fd is looked up.
  if (length === 0n) return new KernelError('EINVAL', 'zero length');
  if (fstart + length - 1n > ULONG_MAX) return new KernelError('EOVERFLOW', 'start + length - 1 overflows');
  const file = task.fget(cmd.fd);
  try {
    // Any file is taken: whether it can be pinned (shmem, within i_size) is only known when a
    // domain needs its pages (memfd_pin_folios), so without one even a non-memfd maps.
    const obj = file.mapFileObject?.() ?? null;
    const gm = obj?.guestmemfs as GuestmemfsInode | undefined;
    if (ictx.persistentId && !gm) errno('EFAULT', 'a persistent iommufd maps guestmemfs files only');
    // iopt_alloc_pages
    if (length > MAX_LENGTH) errno('EINVAL', 'length too large');
    const first = fstart & ~(PAGE - 1n);
    const npages = Number((fstart + length - first + PAGE - 1n) / PAGE);
    const pages = new IoptPages(
      // iopt_alloc_file_pages (live-update series): the memfd and its seals at map time.
      { type: 'file', obj, page: Number(first / PAGE), file: file instanceof MemfdFile ? file : null, seals: file instanceof MemfdFile ? file.obj.seals : 0 },
      first,
      npages,
      !!(flags & U.IOMMU_IOAS_MAP_WRITEABLE),
      ictx.iommufd.svc.pageRefs,
      ictx.accounter(task),
      ictx.persistentId && gm ? [{ file: gm, first: 0, last: npages - 1, filePage: Number(first / PAGE) }] : [],
    );
    try {
      cmd.iova = ioas.iopt.mapPages([{ pages, startByte: fstart - first, length }], length, flags & U.IOMMU_IOAS_MAP_FIXED_IOVA ? iova : null, iommuProt(flags));
    } finally {
      pages.put();
    }
  } finally {
    file.put();
  }
  ictx.respond(ucmd);
}

/** IOMMU_IOAS_COPY (`iommufd_ioas_copy`). */
export function ioasCopy(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_ioas_copy>): void | KernelError {
  const { cmd } = ucmd;
  const flags = cmd.flags;
  if (flags & ~MAP_FLAGS) return new KernelError('EOPNOTSUPP', 'unknown flags');
  const length = cmd.length;
  const src = cmd.src_iova;
  const dst = cmd.dst_iova;
  if (length >= ULONG_MAX || src >= ULONG_MAX || dst >= ULONG_MAX) return new KernelError('EOVERFLOW', 'length or iova too large');
  if (!(flags & (U.IOMMU_IOAS_MAP_READABLE | U.IOMMU_IOAS_MAP_WRITEABLE))) return new KernelError('EINVAL', 'neither READABLE nor WRITEABLE');
  const srcIoas = ictx.findIoas(cmd.src_ioas_id);
  if (srcIoas instanceof KernelError) return srcIoas;
  const list = srcIoas.iopt.getPages(src, length);
  for (const e of list) e.pages.get();
  try {
    const dstIoas = ictx.ioas(cmd.dst_ioas_id);
    cmd.dst_iova = dstIoas.iopt.mapPages(list, length, flags & U.IOMMU_IOAS_MAP_FIXED_IOVA ? dst : null, iommuProt(flags));
    ictx.respond(ucmd);
  } finally {
    for (const e of list) e.pages.put();
  }
}

/** IOMMU_IOAS_UNMAP (`iommufd_ioas_unmap`). */
export function ioasUnmap(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_ioas_unmap>): void | KernelError {
  const { cmd } = ucmd;
  const ioas = ictx.findIoas(cmd.ioas_id);
  if (ioas instanceof KernelError) return ioas;
  const iova = cmd.iova;
  const length = cmd.length;
  let unmapped: bigint;
  // iopt_unmap_iova_range: a preserved HWPT's IOAS cannot change (EBUSY), unmap-all included.
  if (ioas.iopt.luMapImmutable) return new KernelError('EBUSY', 'the IOAS of a preserved HWPT is immutable');
  if (iova === 0n && length === U64_MAX) {
    unmapped = ioas.iopt.unmapRange(0n, ULONG_MAX).unmapped;
  } else {
    if (iova >= ULONG_MAX || length >= ULONG_MAX) return new KernelError('EOVERFLOW', 'iova or length too large');
    if (length === 0n) return new KernelError('EINVAL', 'zero length');
    if (iova + length - 1n > ULONG_MAX) return new KernelError('EOVERFLOW', 'iova + length overflows');
    const r = ioas.iopt.unmapRange(iova, iova + length - 1n);
    if (r.error) return new KernelError(r.error, r.error === 'ENOENT' ? 'splitting or truncating an area is not allowed' : 'area busy');
    unmapped = r.unmapped;
    if (!unmapped) return new KernelError('ENOENT', 'nothing mapped in the range');
  }
  cmd.length = unmapped;
  ictx.respond(ucmd);
}

/** IOMMU_VFIO_IOAS (vfio_compat.c `iommufd_vfio_ioas`). */
export function vfioIoas(ictx: IommufdCtx, ucmd: Ucmd<typeof U.iommu_vfio_ioas>): void {
  const { cmd } = ucmd;
  if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
  switch (cmd.op) {
    case U.IOMMU_VFIO_IOAS_GET:
      if (!ictx.vfioIoas) errno('ENODEV', 'no compat IOAS');
      cmd.ioas_id = ictx.vfioIoas.id;
      ictx.respond(ucmd);
      return;
    case U.IOMMU_VFIO_IOAS_SET:
      ictx.vfioIoas = ictx.ioas(cmd.ioas_id);
      return;
    case U.IOMMU_VFIO_IOAS_CLEAR:
      ictx.vfioIoas = null;
      return;
    default:
      errno('EOPNOTSUPP', 'bad op');
  }
}


/** The guestmemfs files behind every VMA of `[uptr, uptr + length)` by page window, or EFAULT. */
function persistentFiles(task: Task, uptr: bigint, length: bigint): PagesFile[] {
  if (length === 0n) errno('EFAULT', 'no VMA intersects an empty range');
  const out: PagesFile[] = [];
  const first = Number(uptr / PAGE);
  const last = Number((uptr + length - 1n) / PAGE);
  for (let p = first; p <= last; ) {
    const vma = task.mm.find(p);
    const gm = vma?.obj.guestmemfs as GuestmemfsInode | undefined;
    if (!vma || !gm) errno('EFAULT', 'a persistent iommufd maps guestmemfs memory only');
    const end = Math.min(vma.end - 1, last);
    const filePage = vma.pgoff + (p - vma.start);
    const prev = out[out.length - 1];
    if (prev && prev.file === gm && prev.last === p - first - 1 && prev.filePage + (p - first - prev.first) === filePage) prev.last = end - first;
    else out.push({ file: gm, first: p - first, last: end - first, filePage });
    p = vma.end;
  }
  return out;
}

function rangeBytes(r: IovaRange): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, r.start, true);
  v.setBigUint64(8, r.last, true);
  return b;
}

/** `need_charge_update`: whether pages charged to `a` are charged to another process than `task`. */
function needChargeUpdate(a: PinAccount, task: Task): boolean {
  switch (a.mode) {
    case 'none':
      return false;
    case 'mm':
      return a.mm !== task.mm;
    case 'user':
      // The mm's pinned_vm moves too.
      return a.uid !== task.uid || a.mm !== task.mm;
  }
}

/**
 * IOMMU_IOAS_CHANGE_PROCESS (`iommufd_ioas_change_process`): the pins of every area of every IOAS
 * of the context are charged to the caller from now on. Only IOAS_MAP_FILE areas can move (a
 * user-VA map pins through its mm); nothing changes if anything fails.
 */
export function ioasChangeProcess(ictx: IommufdCtx, { cmd, task }: Ucmd<typeof U.iommu_ioas_change_process>): void {
  if (cmd.__reserved) errno('EOPNOTSUPP', '__reserved must be 0');
  // iommufd_take_all_iova_rwsem: every IOAS, by id.
  const ioases = [...ictx.objects.values()].filter((o): o is Ioas => o.type === 'IOAS').sort((a, b) => a.id - b.id);
  const areas = ioases.flatMap((ioas) => ioas.iopt.areas);
  for (const area of areas) {
    if (!area.pages) errno('EBUSY', 'an area is being unmapped');
    if (area.pages.source.type !== 'file') errno('EINVAL', 'an area was not mapped with IOMMU_IOAS_MAP_FILE');
  }
  // Each iopt_pages once, however many areas (COPY) share it.
  const all = [...new Set(areas.map((a) => a.pages as IoptPages))];
  const moving = all.filter((pages) => needChargeUpdate(pages.account, task));
  // charge_current: what they pin, by mode, to the caller first, all or nothing (ENOMEM).
  const npinned: Record<AccountMode, number> = { none: 0, user: 0, mm: 0 };
  for (const pages of moving) npinned[pages.account.mode] += pages.npinned;
  const charged: [PinAccount, number][] = [];
  try {
    for (const mode of ['none', 'user', 'mm'] as const) {
      if (!npinned[mode]) continue;
      const to = ictx.accounter(task, mode);
      to.charge(npinned[mode]);
      charged.push([to, npinned[mode]]);
    }
  } catch (e) {
    for (const [to, n] of charged) to.uncharge(n);
    throw e;
  }
  // Then off the old owner, and change_mm: every area's pages now belong to the caller, in their
  // mode. NONE pages included, though nothing was moved for them: their pinned_vm, counted on the
  // old mm, is taken off the caller's when they unpin, as the kernel does.
  for (const pages of moving) pages.account.uncharge(pages.npinned);
  for (const pages of all) pages.account = ictx.accounter(task, pages.account.mode);
}

/**
 * IOMMU_IOAS_NOIOMMU_GET_PA: the IOVA → physical address lookup for VFIO's unsafe no-IOMMU
 * devices. ioas.c builds it with CONFIG_IOMMUFD_NOIOMMU, which only VFIO_NOIOMMU selects; a VT-d
 * host kernel has that off (so does the lab kernel, oracle/kernel.config), and then the stub in
 * iommufd_private.h answers EOPNOTSUPP to every call that passes the size rules, whatever it holds.
 *
 * Not modelled, the same command with CONFIG_IOMMUFD_NOIOMMU=y on this unit: no CAP_SYS_RAWIO is
 * EPERM; then flags or __reserved EOPNOTSUPP, a zero length EINVAL, iova >= ULONG_MAX EOVERFLOW,
 * no such IOAS ENOENT, nothing mapped at iova ENOENT, and a mapped iova EOPNOTSUPP again (its
 * storage domain is not the no-IOMMU one: no device here is a no-IOMMU device).
 */
export function ioasNoiommuGetPa(_ictx: IommufdCtx, _ucmd: Ucmd<typeof U.iommu_ioas_noiommu_get_pa>): void {
  errno('EOPNOTSUPP', 'built without CONFIG_IOMMUFD_NOIOMMU');
}
