// The upstream flow (Linux 7.3): /dev/liveupdate, sessions, sealed memfds and their preservation
// across kexec, with every errno the real kernel gives (95-luo's goldens judge the same answers).
import { describe, expect, it } from 'vitest';
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  Host,
  LINUX_REBOOT_CMD_KEXEC,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  O_CREAT,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from '../ts/index.js';
import { errno } from '../ts/uapi/errno.js';
import type { File } from '../ts/kernel/file.js';
import type { LiveupdateFileHandler, LiveupdateFlb, LiveupdateSession } from '../ts/kernel/luo.js';
import { PipeFile } from '../ts/kernel/pipe.js';
import { expectErrno } from './helpers.js';

const LUO = 'kho=on liveupdate=on';
const boot = (cmdline = LUO) => Host.boot({ memory: 1n << 30n, cmdline });
const PAGE = 0x1000n;

function session(p: Process, lu: number, name: string): number {
  return p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name }).fd;
}

function memfd(p: Process, bytes: string, flags = 0): { fd: number; va: bigint } {
  const fd = p.memfd_create('m', flags);
  p.ftruncate(fd, 2n * PAGE);
  const va = p.mmap(null, 2n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
  p.memWrite(va, new TextEncoder().encode(bytes));
  return { fd, va };
}

describe('the flow is chosen at boot', () => {
  it('has /dev/liveupdate only with kho=on liveupdate=on', () => {
    for (const cmdline of ['', 'liveupdate=on', 'kho=on', 'kho=on liveupdate=off']) {
      const p = boot(cmdline).kernel.spawn();
      expectErrno(() => p.open('/dev/liveupdate', O_RDWR), 'ENOENT', 'open', '/dev/liveupdate');
    }
    const h = boot('liveupdate=on');
    expect(h.kernel.dmesg().some((l) => l.includes('Disabling liveupdate because KHO is disabled'))).toBe(true);
    const p = boot().kernel.spawn();
    expect(p.open('/dev/liveupdate', O_RDWR)).toBe(3);
  });

  it('keeps the RFC flow: without LUO a kexec hands nothing over unless KHO was activated', () => {
    const h = boot('');
    h.kexec();
    expect(h.kernel.kho.incoming).toBeNull();
    expect(h.kernel.luo).toBeNull();
  });
});

describe('memfd seals (mm/memfd.c)', () => {
  it('is born with F_SEAL_SEAL without MFD_ALLOW_SEALING', () => {
    const p = boot('').kernel.spawn();
    const fd = p.memfd_create('m');
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SEAL);
    expectErrno(() => p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW), 'EPERM', 'fcntl');
  });

  it('adds seals until F_SEAL_SEAL; unknown bits are EINVAL; F_SEAL_EXEC implies the write seals', () => {
    const p = boot('').kernel.spawn();
    const fd = p.memfd_create('m', MFD_ALLOW_SEALING);
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(0);
    expectErrno(() => p.fcntl(fd, F_ADD_SEALS, 0x40), 'EINVAL', 'fcntl');
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL);
    expectErrno(() => p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 'EPERM', 'fcntl');
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_GROW | F_SEAL_SEAL);
    const e = p.memfd_create('e', MFD_ALLOW_SEALING);
    p.fcntl(e, F_ADD_SEALS, F_SEAL_EXEC);
    expect(p.fcntl(e, F_GET_SEALS)).toBe(F_SEAL_EXEC | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE);
    expectErrno(() => p.fcntl(e, 9999), 'EINVAL', 'fcntl');
    const t = p.open('/dev/iommu', O_RDWR);
    expectErrno(() => p.fcntl(t, F_GET_SEALS), 'EINVAL', 'fcntl');
  });

  it('refuses F_SEAL_WRITE while a shared writable mapping exists (EBUSY), not after munmap', () => {
    const p = boot('').kernel.spawn();
    const { fd, va } = memfd(p, 'x', MFD_ALLOW_SEALING);
    expectErrno(() => p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), 'EBUSY', 'fcntl');
    p.munmap(va, 2n * PAGE);
    p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE);
  });

  it('ftruncate frees what is past the new end, splitting a huge folio: growing again reads zeros (found by the fuzzer)', () => {
    const p = boot('').kernel.spawn();
    for (const n of [4n, 512n]) {
      const fd = p.memfd_create('m');
      p.ftruncate(fd, n * PAGE);
      const va = p.mmap(null, n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
      p.memWrite(va, new Uint8Array([9]));
      p.memWrite(va + PAGE, new Uint8Array([1, 2, 3]));
      p.ftruncate(fd, PAGE);
      expect((p.mm.find(Number(va / PAGE))!.obj as unknown as { resident: number }).resident).toBe(1);
      p.ftruncate(fd, n * PAGE);
      expect([...p.memRead(va + PAGE, 3)]).toEqual([0, 0, 0]);
    }
  });

  it('enforces SHRINK, GROW and WRITE on ftruncate, write and mmap (EPERM)', () => {
    const p = boot('').kernel.spawn();
    const fd = p.memfd_create('m', MFD_ALLOW_SEALING);
    p.ftruncate(fd, 2n * PAGE);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    expectErrno(() => p.ftruncate(fd, PAGE), 'EPERM', 'ftruncate');
    expectErrno(() => p.ftruncate(fd, 3n * PAGE), 'EPERM', 'ftruncate');
    p.ftruncate(fd, 2n * PAGE);
    expectErrno(() => p.write(fd, 'x'), 'EPERM', 'write');
    expectErrno(() => p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd), 'EPERM', 'mmap');
    p.mmap(null, PAGE, PROT_READ, MAP_SHARED, fd);
    p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
  });
});

describe('/dev/liveupdate and sessions: the errnos of Linux 7.3', () => {
  it('is exclusive: a second open is EBUSY until the first closes', () => {
    const p = boot().kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    expectErrno(() => p.open('/dev/liveupdate', O_RDWR), 'EBUSY', 'open');
    p.close(lu);
    p.open('/dev/liveupdate', O_RDWR);
  });

  it('checks names and sizes: EEXIST, EINVAL (empty, unterminated, short size), E2BIG', () => {
    const p = boot().kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const s = session(p, lu, 'vm-1');
    expect(s).toBe(4);
    expectErrno(() => session(p, lu, 'vm-1'), 'EEXIST', 'ioctl', 'LIVEUPDATE_IOCTL_CREATE_SESSION');
    expectErrno(() => session(p, lu, ''), 'EINVAL');
    expectErrno(() => p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: new Uint8Array(64).fill(0x61) }), 'EINVAL');
    expectErrno(() => p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { size: 71, name: 'short' }), 'EINVAL');
    expect(session(p, lu, 'x'.repeat(63))).toBe(5);
    const named = p.ioctl(s, LIVEUPDATE_SESSION_GET_NAME, {});
    expect(new TextDecoder().decode(named.name.subarray(0, 4))).toBe('vm-1');
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_GET_NAME, { reserved: 1 }), 'EINVAL');
  });

  it('answers outgoing sessions: RETRIEVE_SESSION ENOENT, RETRIEVE_FD and FINISH EINVAL, unknown commands EINVAL or ENOTTY', () => {
    const p = boot().kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const s = session(p, lu, 'out');
    expectErrno(() => p.ioctl(lu, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name: 'out' }), 'ENOENT');
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_RETRIEVE_FD, { token: 1n }), 'EINVAL');
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_FINISH, {}), 'EINVAL');
    expectErrno(() => p.ioctl(s, 0xba44, new Uint8Array(8)), 'EINVAL');
    expectErrno(() => p.ioctl(s, 0x3b40, new Uint8Array(8)), 'ENOTTY');
    expectErrno(() => p.ioctl(lu, 0xba02, new Uint8Array(8)), 'EINVAL');
    expectErrno(() => p.ioctl(lu, 0x3b00, new Uint8Array(8)), 'ENOTTY');
  });

  it('checks PRESERVE_FD: EEXIST token, EBADF, ENOENT for files no handler takes, EBUSY preserved twice', () => {
    const p = boot().kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const s = session(p, lu, 'a');
    const t = session(p, lu, 'b');
    const m = p.memfd_create('m');
    const n = p.memfd_create('n');
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: m, token: 1n });
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: n, token: 1n }), 'EEXIST');
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: m, token: 2n }), 'EBUSY');
    expectErrno(() => p.ioctl(t, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: m, token: 1n }), 'EBUSY');
    // The same inode through another open file is the same memfd.
    const again = p.open(`/proc/self/fd/${m}`, O_RDWR);
    expectErrno(() => p.ioctl(t, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: again, token: 1n }), 'EBUSY');
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: 999, token: 3n }), 'EBADF');
    p.mount('tmpfs', '/tmp');
    const [r, w] = p.pipe();
    // An iommufd has a handler with the iommu live-update series (liveupdate.luo.iommufd.test.ts),
    // none in plain 7.3.
    for (const fd of [p.open('/tmp/f', O_CREAT | O_RDWR), r, w, lu, t]) {
      expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 3n }), 'ENOENT');
    }
  });

  it('freezes a preserved memfd’s size (EPERM, sealed or not); closing the session frees its name and files', () => {
    const p = boot().kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const s = session(p, lu, 'x');
    const { fd } = memfd(p, 'hello');
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 1n });
    expectErrno(() => p.ftruncate(fd, 3n * PAGE), 'EPERM', 'ftruncate');
    expectErrno(() => p.ftruncate(fd, PAGE), 'EPERM', 'ftruncate');
    p.ftruncate(fd, 2n * PAGE);
    p.close(s);
    p.ftruncate(fd, 3n * PAGE);
    const s2 = session(p, lu, 'x');
    p.ioctl(s2, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 1n });
  });
});

describe('kexec in the LUO flow', () => {
  it('hands sessions and memfds over through preserved memory and the KHO tree; retrieve, finish', () => {
    const h = boot();
    let p = h.kernel.spawn();
    let lu = p.open('/dev/liveupdate', O_RDWR);
    const s = session(p, lu, 'vm');
    const a = memfd(p, 'guest ram', MFD_ALLOW_SEALING);
    p.fcntl(a.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    const pfn = p.mm.find(Number(a.va / PAGE))!.obj.pfn(0, false);
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: a.fd, token: 0x1001n });
    p.memWrite(a.va + PAGE, new TextEncoder().encode('after'));
    const g = session(p, lu, 'gone');
    p.ioctl(g, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: p.memfd_create('g'), token: 1n });
    p.close(g);
    h.kexec();

    expect(h.kernel.kho.incoming?.child('LUO')?.has('preserved-data')).toBe(true);
    expect(h.kernel.dmesg().some((l) => l.includes('liveupdate number: 1'))).toBe(true);
    p = h.kernel.spawn();
    lu = p.open('/dev/liveupdate', O_RDWR);
    expectErrno(() => p.ioctl(lu, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name: 'gone' }), 'ENOENT');
    const r = p.ioctl(lu, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name: 'vm' }).fd;
    expectErrno(() => p.ioctl(lu, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name: 'vm' }), 'EINVAL');
    expectErrno(() => p.ioctl(r, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: p.memfd_create('x'), token: 2n }), 'EINVAL');
    expectErrno(() => p.ioctl(r, LIVEUPDATE_SESSION_RETRIEVE_FD, { token: 7n }), 'ENOENT');
    const fd = p.ioctl(r, LIVEUPDATE_SESSION_RETRIEVE_FD, { token: 0x1001n }).fd;
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SHRINK | F_SEAL_GROW);
    const va = p.mmap(null, 2n * PAGE, PROT_READ, MAP_SHARED, fd);
    expect(new TextDecoder().decode(p.memRead(va, 9))).toBe('guest ram');
    expect(new TextDecoder().decode(p.memRead(va + PAGE, 5))).toBe('after');
    // The same pages: the folio the old kernel wrote is the one the new memfd maps.
    expect(p.mm.find(Number(va / PAGE))!.obj.pfn(0, false)).toBe(pfn);
    // A retrieved memfd is no longer frozen, but keeps its seals.
    expectErrno(() => p.ftruncate(fd, 4n * PAGE), 'EPERM', 'ftruncate');
    expectErrno(() => p.ioctl(r, LIVEUPDATE_SESSION_FINISH, { reserved: 1 }), 'EINVAL');
    p.ioctl(r, LIVEUPDATE_SESSION_FINISH, {});
    expectErrno(() => p.ioctl(r, LIVEUPDATE_SESSION_RETRIEVE_FD, { token: 0x1001n }), 'ENOENT');
    p.close(r);
    expectErrno(() => p.ioctl(lu, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name: 'vm' }), 'ENOENT');
  });

  it('drops what was not retrieved at the next update: its pages are free after the next kexec', () => {
    const h = boot();
    const p = h.kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const s = session(p, lu, 'vm');
    const a = memfd(p, 'x');
    const pfn = p.mm.find(Number(a.va / PAGE))!.obj.pfn(0, false);
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: a.fd, token: 1n });
    h.kexec();
    expect(h.memory.isAllocated(BigInt(pfn) << 12n)).toBe(true);
    h.kexec();
    expect(h.memory.isAllocated(BigInt(pfn) << 12n)).toBe(false);
  });

  it('fails the reboot when a freeze fails: the frozen files are unfrozen, nothing is handed over', () => {
    const h = boot();
    const calls: string[] = [];
    let seen: LiveupdateSession | null = null;
    const flbLog: string[] = [];
    const flb: LiveupdateFlb = {
      compatible: 'test-flb-v1',
      ops: {
        preserve: (a) => {
          flbLog.push('preserve');
          a.data = 42n;
        },
        unpreserve: () => void flbLog.push('unpreserve'),
        retrieve: (a) => void flbLog.push(`retrieve ${a.data}`),
        finish: () => void flbLog.push('finish'),
      },
    };
    const fh: LiveupdateFileHandler = {
      compatible: 'test-pipe-v1',
      ops: {
        canPreserve: (_h, f: File) => f instanceof PipeFile,
        preserve: (a) => {
          seen = a.session;
          a.serializedData = 7n;
        },
        unpreserve: () => void calls.push('unpreserve'),
        freeze: (a) => {
          calls.push(`freeze ${(a.file as PipeFile).end}`);
          if ((a.file as PipeFile).end === 'write') errno('ENOSPC', 'injected');
        },
        unfreeze: (a) => void calls.push(`unfreeze ${(a.file as PipeFile).end}`),
        retrieve: () => errno('EIO', 'not here'),
        finish: () => {},
      },
    };
    h.kernel.liveupdate.registerFileHandler(fh);
    h.kernel.liveupdate.registerFlb(fh, flb);
    expect(() => h.kernel.liveupdate.registerFileHandler(fh)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    const p = h.kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const s = session(p, lu, 'vm');
    const [r, w] = p.pipe();
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: r, token: 1n });
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: w, token: 2n });
    expect(flbLog).toEqual(['preserve']);
    // liveupdate_get_token_outgoing: what iommufd asks of the memfds behind its areas.
    const wf = p.fget(w);
    expect(h.kernel.liveupdate.getTokenOutgoing(seen!, wf)).toBe(2n);
    expect(() => h.kernel.liveupdate.getTokenOutgoing({ name: 'vm' }, wf)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    wf.put();
    expect(h.kernel.liveupdate.flbGetOutgoing(flb)).toBeUndefined();
    p.kexecFileLoad();
    expectErrno(() => p.reboot(LINUX_REBOOT_CMD_KEXEC), 'ENOSPC', 'reboot');
    expect(calls).toEqual(['freeze read', 'freeze write', 'unfreeze read']);
    expect(h.kernel.generation).toBe(0);
    expect(h.kernel.kho.active).toBe(false);
    expectErrno(() => h.kexec(), 'ENOSPC', 'reboot');
    p.close(s);
    expect(calls.slice(-2)).toEqual(['unpreserve', 'unpreserve']);
    expect(flbLog).toEqual(['preserve', 'unpreserve']);
  });
});
