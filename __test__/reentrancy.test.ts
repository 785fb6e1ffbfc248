// Re-entrancy refused cleanly (issue 14, part 4), and the frame a failed IOAS_MAP left behind.
//
// Phase observers (`host.onPhase`) and KHO failure-injection hooks (`kho.failPoint`) run inside a
// transition, like a notifier callback in the kernel. From there a kexec (`host.kexec()`:
// ERR_INVALID_STATE; `reboot(2)`: EDEADLK), a KHO activate/abort (EDEADLK) or any syscall into
// that kernel (EDEADLK) is refused and changes nothing; after every refusal exactly one kernel
// is live, generations are consecutive, and a clean live update still works. What observers may
// do — memory, DMA, timeline, dmesg — keeps working. A kernel bug in a syscall is an
// ERR_INTERNAL_ASSERTION with its cause, never a raw internal error. And with one free frame an
// IOAS_MAP that fails with ENOMEM in the page-table builder leaves every frame as it found it.
import { describe, expect, it } from 'vitest';
import {
  Host,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_UNMAP,
  LINUX_REBOOT_CMD_KEXEC,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_RDWR,
  O_WRONLY,
  SyscallError,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  type Process,
  type TimelineEntry,
} from 'iommu-liveupdate';
import {
  BDF0,
  FIXED,
  GUEST_BYTES,
  GUEST_OFF,
  IOVA_4K,
  IOVA_SP,
  MiB,
  PAGE,
  R,
  RO_BYTES,
  RW,
  TRAFFIC0,
  W,
  bootVm,
  dec,
  enc,
  khoWrite,
  sitesOf,
  liveUpdate,
  reattach,
  type Vm,
} from './liveupdate-helpers.js';
import { expectErrno, expectSyscallError } from './helpers.js';

const DEGRADED = /KHO: ignoring the handover|not restored|not adopted|left blocked|BUG:/;

/** What `fn` throws (fails if it returns). */
function caught(fn: () => unknown): Error & { code?: string; cause?: unknown } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected an exception');
}

/** An `ERR_INVALID_STATE` refusal of a kexec, Node-style. */
function expectInvalidState(e: unknown): void {
  expect(e).toBeInstanceOf(Error);
  expect(e).not.toBeInstanceOf(SyscallError);
  expect((e as { code?: string }).code).toBe('ERR_INVALID_STATE');
  expect((e as Error).message).toMatch(/^Invalid state: kexec refused: /);
}

/**
 * Exactly one kernel is live: generations 0, 1, ... each booted once, all but the last dead, the
 * last one is `host.kernel`.
 */
function expectOneLiveKernel(host: Host, generation: number): void {
  const gens = host.generations;
  expect(gens.map((k) => k.generation)).toEqual(Array.from({ length: generation + 1 }, (_, i) => i));
  expect(gens.map((k) => k.dead)).toEqual(gens.map((_, i) => i < generation));
  expect(host.kernel).toBe(gens[generation]);
  expect(host.timeline.filter((e) => e.phase === 'boot').map((e) => e.generation)).toEqual(gens.map((k) => k.generation));
  expect(host.timeline.filter((e) => e.phase === 'shutdown').map((e) => e.generation)).toEqual(gens.slice(0, -1).map((k) => k.generation));
}

/** The VMM after a jump: re-claims its iommufd, re-attaches device 0, and the guest's bytes are there. */
function vmmAfterJump(vm: Vm): Process {
  const q = vm.host.kernel.spawn();
  reattach(q, vm.pid);
  expect(vm.host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
  expect(vm.host.kernel.dmesg().join('\n')).not.toMatch(DEGRADED);
  return q;
}

/** The machine still works: a clean live update from `p` (the running kernel's VMM). */
function cleanUpdate(vm: Vm, p: Process): Process {
  const gen = vm.host.kernel.generation;
  liveUpdate(p);
  expectOneLiveKernel(vm.host, gen + 1);
  return vmmAfterJump(vm);
}

/** After a failed activation: KHO inactive, nothing preserved, no frame taken. */
function expectKhoWhole(vm: Vm, frames: number, why: string): void {
  const kho = vm.host.kernel.kho;
  expect(kho.active, why).toBe(false);
  expect(kho.blob, why).toBe(null);
  expect(kho.blobPa, why).toBe(null);
  expect(vm.host.memory.preserved(), why).toEqual([]);
  expect(vm.host.memory.stats().framesAllocated, why).toBe(frames);
  expect(vm.host.kernel.guestmemfs!.serialised, why).toBe(false);
}

// ---- kexec from a phase observer ------------------------------------------------------------------

describe('kexec started from a phase observer', () => {
  it('host.kexec() from onPhase("shutdown"): ERR_INVALID_STATE, one kernel, DMA never stopped, a clean update after', () => {
    const vm = bootVm();
    const { host } = vm;
    const t = host.dmaTraffic({ bdf: BDF0, ...TRAFFIC0, pagesPerStep: 2 });
    const refused: unknown[] = [];
    let armed = true;
    host.onPhase((e) => {
      if (e.phase !== 'shutdown' || !armed) return;
      armed = false;
      refused.push(caught(() => host.kexec()));
    });
    khoWrite(vm.p, '1');
    expect(host.kexec()).toBe(host.kernel);
    expect(refused).toHaveLength(1);
    expectInvalidState(refused[0]);
    expect((refused[0] as Error).message).toMatch(/phase observer \(phase shutdown\)/);
    expectOneLiveKernel(host, 1);
    const q = vmmAfterJump(vm);
    expect(t.faults).toBe(0);
    expect(t.mismatches).toBe(0);
    cleanUpdate(vm, q);
    expect(t.faults).toBe(0);
    expect(t.mismatches).toBe(0);
  });

  it('an observer that lets the refusal escape: the outer kexec completes, then rethrows it', () => {
    const vm = bootVm();
    const { host } = vm;
    let armed = true;
    host.onPhase((e) => {
      if (e.phase !== 'shutdown' || !armed) return;
      armed = false;
      host.kexec();
    });
    khoWrite(vm.p, '1');
    expectInvalidState(caught(() => host.kexec()));
    expectOneLiveKernel(host, 1);
    cleanUpdate(vm, vmmAfterJump(vm));
  });

  const PHASES = ['kho-dump', 'kho-abort', 'shutdown', 'jump', 'early-boot', 'iommu-init', 'iommufd-restore', 'boot'];
  for (const phase of PHASES) {
    it(`host.kexec() from onPhase("${phase}") during a live update by syscalls: refused, one kernel`, () => {
      const vm = bootVm();
      const { host } = vm;
      const refused: unknown[] = [];
      let armed = true;
      host.onPhase((e) => {
        if (e.phase !== phase || !armed) return;
        armed = false;
        refused.push(caught(() => host.kexec({ cmdline: 'nested' })));
      });
      // DUMP, ABORT, DUMP, then kexec_file_load + reboot(2).
      khoWrite(vm.p, '1');
      khoWrite(vm.p, '0');
      liveUpdate(vm.p);
      expect(refused).toHaveLength(1);
      expectInvalidState(refused[0]);
      expect(host.generations.some((k) => k.cmdline === 'nested')).toBe(false);
      expectOneLiveKernel(host, 1);
      cleanUpdate(vm, vmmAfterJump(vm));
    });
  }
});

// ---- reboot(2) from a phase observer -----------------------------------------------------------------

describe('reboot(LINUX_REBOOT_CMD_KEXEC) from a phase observer', () => {
  it('EDEADLK from a process of the live kernel, ESRCH from one of the kernel being replaced; nothing else happens', () => {
    const vm = bootVm();
    const { host } = vm;
    const other = host.kernel.spawn();
    other.kexecFileLoad({ cmdline: 'nested' });
    const seen: [string, unknown][] = [];
    host.onPhase((e: TimelineEntry) => {
      if (e.phase === 'kho-dump' || e.phase === 'kho-abort' || e.phase === 'shutdown') seen.push([e.phase, caught(() => other.reboot(LINUX_REBOOT_CMD_KEXEC))]);
      if (e.phase === 'boot' && e.generation === 1) {
        // A process of the new kernel, made in the observer: its syscalls wait for the boot.
        const q = host.kernel.spawn();
        seen.push(['boot: kexec_file_load', caught(() => q.kexecFileLoad({}))]);
        seen.push(['boot: reboot', caught(() => q.reboot(LINUX_REBOOT_CMD_KEXEC))]);
      }
    });
    khoWrite(vm.p, '1');
    expect(host.kernel.kho.active).toBe(true);
    khoWrite(vm.p, '0');
    expect(host.kernel.kho.active).toBe(false);
    expectOneLiveKernel(host, 0);
    liveUpdate(vm.p);
    expect(seen.map(([p]) => p)).toEqual(['kho-dump', 'kho-abort', 'kho-dump', 'shutdown', 'boot: kexec_file_load', 'boot: reboot']);
    for (const [p, e] of seen.slice(0, 3)) {
      expectSyscallError(e, 'EDEADLK', 'reboot');
      expect((e as Error).message, p).toMatch(/called from a phase observer \(phase kho-(dump|abort)\)/);
    }
    expectSyscallError(seen[3]![1], 'ESRCH', 'reboot');
    expectSyscallError(seen[4]![1], 'EDEADLK', 'kexec_file_load');
    expectSyscallError(seen[5]![1], 'EDEADLK', 'reboot');
    expect(host.generations.some((k) => k.cmdline === 'nested')).toBe(false);
    expectOneLiveKernel(host, 1);
    cleanUpdate(vm, vmmAfterJump(vm));
  });
});

// ---- KHO activate / abort from a failure-injection hook ----------------------------------------------

describe('KHO activate/abort from inside kho.failPoint', () => {
  it('at every DUMP site: the nested writes and calls get EDEADLK, the outer write fails as the hook says, nothing leaks', () => {
    const vm = bootVm();
    const { host, p } = vm;
    const sites = sitesOf(vm);
    expect(sites.length).toBeGreaterThan(5);
    const kfd = p.open('/sys/kernel/kho/active', O_WRONLY);
    for (let k = 0; k < sites.length; k++) {
      const frames = host.memory.stats().framesAllocated;
      const kho = host.kernel.kho;
      const nested: unknown[] = [];
      let hits = 0;
      kho.failPoint = () => {
        if (hits++ !== k) return false;
        nested.push(caught(() => p.write(kfd, '0')), caught(() => p.write(kfd, '1')));
        nested.push(caught(() => kho.deactivate()), caught(() => kho.activate()));
        return true;
      };
      expectErrno(() => p.write(kfd, '1'), 'ENOMEM', 'write');
      kho.failPoint = null;
      const why = `hook at ${sites[k]} (#${k})`;
      expect(nested, why).toHaveLength(4);
      expectSyscallError(nested[0], 'EDEADLK', 'write');
      expectSyscallError(nested[1], 'EDEADLK', 'write');
      expect((nested[0] as Error).message, why).toContain(`KHO failure-injection hook at ${sites[k]}`);
      // Direct calls of the kernel's own functions get the KernelError the write would return.
      expect((nested[2] as { code?: string }).code, why).toBe('EDEADLK');
      expect((nested[3] as { code?: string }).code, why).toBe('EDEADLK');
      expectKhoWhole(vm, frames, why);
    }
    p.close(kfd);
    expectOneLiveKernel(host, 0);
    cleanUpdate(vm, p);
  });

  it('a hook that aborts and re-activates KHO and lets the errors escape: a SyscallError, never a raw ERR_PHYSMEM_*', () => {
    const vm = bootVm();
    const { host, p } = vm;
    const sites = sitesOf(vm);
    const kfd = p.open('/sys/kernel/kho/active', O_WRONLY);
    for (const via of ['sysfs', 'direct'] as const) {
      for (let k = 0; k < sites.length; k++) {
        const frames = host.memory.stats().framesAllocated;
        const kho = host.kernel.kho;
        let hits = 0;
        kho.failPoint = () => {
          if (hits++ !== k) return false;
          if (via === 'sysfs') {
            p.write(kfd, '0');
            p.write(kfd, '1');
          } else {
            kho.deactivate();
            kho.activate();
          }
          return true;
        };
        const e = caught(() => p.write(kfd, '1'));
        kho.failPoint = null;
        const why = `${via}, hook at ${sites[k]} (#${k})`;
        expectSyscallError(e, 'EDEADLK', 'write');
        expect(e.message, why).not.toMatch(/ERR_PHYSMEM/);
        expectKhoWhole(vm, frames, why);
      }
    }
    p.close(kfd);
    expectOneLiveKernel(host, 0);
    cleanUpdate(vm, p);
  });

  it('host.kexec() from the hook: ERR_INVALID_STATE, the DUMP is aborted with it, one kernel', () => {
    const vm = bootVm();
    const { host, p } = vm;
    const frames = host.memory.stats().framesAllocated;
    const refused: unknown[] = [];
    host.kernel.kho.failPoint = (site) => {
      if (site !== 'intel-iommu:dump') return false;
      refused.push(caught(() => host.kexec()));
      host.kexec(); // and once more, uncaught: the hook's exception fails the write
      return false;
    };
    const e = caught(() => khoWrite(p, '1'));
    host.kernel.kho.failPoint = null;
    expect(refused).toHaveLength(1);
    for (const x of [refused[0], e]) {
      expectInvalidState(x);
      expect((x as Error).message).toMatch(/KHO failure-injection hook at intel-iommu:dump/);
    }
    expectKhoWhole(vm, frames, 'kexec from the hook');
    expectOneLiveKernel(host, 0);
    cleanUpdate(vm, p);
  });
});

// ---- syscalls from inside the hook or an observer --------------------------------------------------

describe('syscalls from inside a transition', () => {
  it('every syscall from the failure-injection hook fails with EDEADLK and changes nothing', () => {
    const vm = bootVm();
    const { host, p } = vm;
    const results: [string, unknown][] = [];
    const calls: [string, () => unknown][] = [
      ['ioctl', () => p.ioctl(vm.fd, IOMMU_IOAS_UNMAP, { ioas_id: vm.ioas, iova: IOVA_4K, length: 64n * 1024n })],
      ['ioctl', () => p.ioctl(vm.fd, IOMMU_IOAS_ALLOC, {})],
      ['open', () => p.open('/dev/iommu', O_RDWR)],
      ['close', () => p.close(vm.g)],
      ['mmap', () => p.mmap(null, MiB, RW, MAP_SHARED | MAP_ANONYMOUS)],
      ['memWrite', () => p.memWrite(vm.va + GUEST_OFF, enc('overwritten'))],
      ['kexec_file_load', () => p.kexecFileLoad({ cmdline: 'nested' })],
      ['reboot', () => p.reboot(LINUX_REBOOT_CMD_KEXEC)],
      ['exit', () => p.exit()],
    ];
    host.kernel.kho.failPoint = (site) => {
      if (site === 'iommufd:dump') for (const [name, fn] of calls) results.push([name, caught(fn)]);
      return false;
    };
    khoWrite(p, '1');
    host.kernel.kho.failPoint = null;
    expect(results.map(([n]) => n)).toEqual(calls.map(([n]) => n));
    for (const [name, e] of results) {
      expectSyscallError(e, 'EDEADLK', name);
      expect((e as Error).message).toMatch(/called from the KHO failure-injection hook at iommufd:dump/);
    }
    // Nothing changed: the DUMP completed, the areas, fds, bytes and the process are as they were.
    expect(host.kernel.kho.active).toBe(true);
    expect(host.kernel.kexecImage).toBe(null);
    const ranges = p.ioctl(vm.fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: vm.ioas, num_iovas: 8, allowed_iovas: [] });
    expect(ranges.num_iovas).toBeGreaterThan(0);
    expect(host.device(BDF0).dma.read(IOVA_4K, RO_BYTES.length)).toEqual(RO_BYTES);
    expect(p.memRead(vm.va + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    khoWrite(p, '0');
    p.close(vm.g);
    expectOneLiveKernel(host, 0);
    cleanUpdate(vm, p);
  });

  it('from a phase observer: syscalls get EDEADLK, while memory, DMA, the timeline and dmesg work', () => {
    const vm = bootVm();
    const { host, p } = vm;
    const scratch = host.memory.alloc();
    const log: string[] = [];
    let armed = true;
    host.onPhase((e) => {
      if (e.phase === 'kho-dump' && armed) {
        expectErrno(() => p.ioctl(vm.fd, IOMMU_IOAS_ALLOC, {}), 'EDEADLK', 'ioctl');
        expectErrno(() => p.stat('/dev/iommu'), 'EDEADLK', 'stat');
        expect(host.timeline.at(-1)).toBe(e);
        expect(host.kernel.dmesg().join('\n')).toMatch(/KHO: serialised/);
        expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
        host.memory.write(scratch, enc('written at kho-dump'));
        log.push(dec(host.memory.read(scratch, 19)));
      }
      if (e.phase === 'jump' && armed) {
        // Between the scrub and the boot, memory is hardware: an observer may write it.
        host.memory.write(scratch, enc('written at jump'));
        log.push(dec(host.memory.read(scratch, 15)));
        host.device(BDF0).dma.write(IOVA_SP + 3n * MiB, enc('dma at jump'));
        log.push(dec(host.device(BDF0).dma.read(IOVA_SP + 3n * MiB, 11)));
      }
    });
    liveUpdate(p);
    armed = false;
    expect(log).toEqual(['written at kho-dump', 'written at jump', 'dma at jump']);
    expectOneLiveKernel(host, 1);
    const q = vmmAfterJump(vm);
    expect(dec(host.device(BDF0).dma.read(IOVA_SP + 3n * MiB, 11))).toBe('dma at jump');
    cleanUpdate(vm, q);
  });
});

// ---- a kernel bug inside a syscall ---------------------------------------------------------------

describe('an unexpected error inside a syscall', () => {
  it('is an ERR_INTERNAL_ASSERTION with the original error as cause and a BUG line, the DUMP aborted cleanly', () => {
    const vm = bootVm();
    const { host, p } = vm;
    // Behind the kernel's back, preserve the persistent domain's top table: the DUMP's own
    // preserve of it then fails inside the native core (a state the kernel never expects).
    const pgd = host.kernel.intel.domainOf(vm.sid0)!.pt.pgd;
    host.memory.preserve(pgd);
    const frames = host.memory.stats().framesAllocated;
    const e = caught(() => khoWrite(p, '1'));
    expect(e).not.toBeInstanceOf(SyscallError);
    expect(e.code).toBe('ERR_INTERNAL_ASSERTION');
    expect(e.message).toMatch(/^write: internal error in the simulated kernel \(ERR_PHYSMEM_PRESERVED: /);
    expect((e.cause as { code?: string }).code).toBe('ERR_PHYSMEM_PRESERVED');
    expect(host.kernel.dmesg().at(-1)).toMatch(/BUG: unexpected error in write: /);
    expect(host.kernel.kho.active).toBe(false);
    expect(host.memory.preserved()).toEqual([{ pa: pgd, order: 0 }]);
    expect(host.memory.stats().framesAllocated).toBe(frames);
    host.memory.unpreserve(pgd);
    cleanUpdate(vm, p);
  });
});

// ---- IOAS_MAP out of memory in the page-table builder ------------------------------------------------

describe('IOAS_MAP with one free frame', () => {
  it('fails with ENOMEM and leaves exactly the frames it found; later maps and unmaps work', () => {
    const host = Host.boot({ memory: 64n * MiB, devices: [{ bdf: BDF0 }] });
    const p = host.kernel.spawn();
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
    const va = p.mmap(null, 2n * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS);
    p.memWrite(va, enc('page 0')); // faulted in now: the map only pins
    p.memWrite(va + PAGE, enc('page 1'));
    const A = 0x10_0000n;
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas, user_va: va, length: PAGE, iova: A });
    // Take every frame but one.
    const held: bigint[] = [];
    while (host.memory.stats().framesFree > 1) held.push(host.memory.alloc());
    const before = host.memory.stats();
    const pinned = host.kernel.pinnedPages();
    // 512 GiB up: a new L3, L2 and L1 table; the L3 takes the last frame, the L2 fails.
    const FAR = 1n << 39n;
    const e = expectErrno(() => p.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas, user_va: va + PAGE, length: PAGE, iova: FAR }), 'ENOMEM', 'ioctl');
    expect(e.request).toBe('IOMMU_IOAS_MAP');
    expect(e.message).toMatch(/page-table allocation/);
    const after = host.memory.stats();
    expect(after.framesAllocated).toBe(before.framesAllocated);
    expect(after.framesFree).toBe(1);
    expect(host.kernel.pinnedPages()).toBe(pinned);
    // The IOVA was not kept: with memory back, the same map works; a map in an existing table works right away.
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas, user_va: va + PAGE, length: PAGE, iova: A + PAGE });
    expect(dec(host.device(BDF0).dma.read(A + PAGE, 6))).toBe('page 1');
    expect(host.memory.stats().framesAllocated).toBe(before.framesAllocated);
    expect(p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: A + PAGE, length: PAGE }).length).toBe(PAGE);
    for (const pa of held) host.memory.free(pa);
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas, user_va: va + PAGE, length: PAGE, iova: FAR });
    expect(dec(host.device(BDF0).dma.read(FAR, 6))).toBe('page 1');
    expect(dec(host.device(BDF0).dma.read(A, 6))).toBe('page 0');
    expect(p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: FAR, length: PAGE }).length).toBe(PAGE);
  });
});
