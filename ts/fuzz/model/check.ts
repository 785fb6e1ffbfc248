// The deep check: everything user space can read back of the state (IOMMU_OPTION, IOVA_RANGES,
// pin counts, guestmemfs's directory and sizes, KHO's attributes, the persisted iommufds).
import { IOMMU_IOAS_IOVA_RANGES, IOMMU_OPTION, IOMMU_OPTION_OP_GET, IOMMU_OPTION_PERSISTENT, O_RDONLY } from '../../index.js';
import { holes, ULONG_MAX } from '../intervals.js';
import { pinCountOf, vaPageId } from './mm.js';
import { BLOCK, errs, hex, MNT, okAny, okv, pageOf, VA_ANON, VA_MEMFD, type ModelState, type Plan } from './state.js';

export function* planCheck(m: ModelState): Generator<Plan, void, void> {
  for (const ctx of m.slots) {
    if (!ctx || ctx.dead) continue;
    const fd = ctx.fd!;
    yield { what: `IOMMU_OPTION(PERSISTENT, GET) fd ${fd}`, run: (s) => s.p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_GET }).val64, alts: [okv(BigInt(ctx.pid))] };
    for (const io of ctx.ioases()) {
      const want = { ranges: holes(m.reservedOf(ctx, io), 0n, ULONG_MAX), align: m.alignOf(ctx, io) };
      yield {
        what: `IOMMU_IOAS_IOVA_RANGES ioas ${io.id}`,
        run: (s) => {
          const arr: ({ start: bigint; last: bigint } | undefined)[] = new Array(8).fill(undefined);
          const r = s.p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: io.id, num_iovas: 8, allowed_iovas: arr });
          return { ranges: arr.slice(0, r.num_iovas as number), align: r.out_iova_alignment };
        },
        alts: [okv(want)],
      };
    }
  }
  // Pin counts of the pages user mappings and files back.
  const vas: bigint[] = [VA_ANON, VA_MEMFD];
  for (const ctx of m.liveCtxs()) for (const io of ctx.ioases()) for (const a of io.areas) if (a.pages.kind === 'user') vas.push(a.pages.base + a.off, a.pages.base + a.off + (a.last - a.start));
  for (const va of vas.slice(0, 16)) {
    const id = vaPageId(m, pageOf(va));
    yield { what: `pinCount ${hex(va)}`, run: (s) => s.p.pinCount(va), alts: [okv(id === null ? 0 : pinCountOf(m, id))] };
  }
  const names = [...m.names.keys()].sort();
  yield {
    what: `readdir ${MNT}`,
    run: (s) => s.p.readdir(MNT).map((d) => d.d_name).filter((n) => n !== '.' && n !== '..').sort(),
    alts: [okv(names)],
  };
  for (const n of names) {
    const size = BigInt(m.names.get(n)!.blocks.length) * BLOCK;
    yield { what: `stat ${MNT}/${n}`, run: (s) => s.p.stat(`${MNT}/${n}`).st_size, alts: [okv(size)] };
  }
  // KHO: the attribute reads back its state; the blob exists only while active.
  const kfd = m.peekFd();
  yield { what: 'open /sys/kernel/kho/active', run: (s) => s.p.open('/sys/kernel/kho/active', O_RDONLY), alts: [okv(kfd, () => m.allocFd())] };
  yield { what: 'read /sys/kernel/kho/active', run: (s) => new TextDecoder().decode(s.p.read(kfd, 16)), alts: [okv(m.khoActive ? '1\n' : '0\n')] };
  yield { what: `close ${kfd}`, run: (s) => s.p.close(kfd), alts: [okAny(() => m.freeFd(kfd))] };
  yield { what: 'stat /sys/kernel/kho/dt', run: (s) => s.p.stat('/sys/kernel/kho/dt').st_mode & 0o777, alts: [m.khoActive ? okv(0o400) : errs(['ENOENT'])] };
  const waiting = m.liveCtxs().filter((c) => !c.claimed).map((c) => String(c.pid));
  yield {
    what: 'readdir /sys/kernel/iommufd_persisted',
    run: (s) => s.p.readdir('/sys/kernel/iommufd_persisted').map((d) => d.d_name),
    alts: [{ okCheck: (v) => (waiting.every((w) => (v as string[]).includes(w)) ? null : `unclaimed persisted ids ${waiting.join(',')} not all listed`) }],
  };
}
