// Function error injection (/sys/kernel/debug/fail_function, kernel/fail_function.c): the knobs
// as Linux has them, and the live update's failure sites — a file's freeze and KHO's
// finalisation — failing the reboot with nothing changed, a retry succeeding.
import { describe, expect, it } from 'vitest';
import {
  Host,
  LINUX_REBOOT_CMD_KEXEC,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  MAP_SHARED,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from '../ts/index.js';
import { expectErrno } from './helpers.js';

const FF = '/sys/kernel/debug/fail_function';
const PAGE = 0x1000n;

function put(p: Process, path: string, value: string): void {
  const fd = p.open(path, O_WRONLY);
  try {
    p.write(fd, value);
  } finally {
    p.close(fd);
  }
}
function get(p: Process, path: string): string {
  const fd = p.open(path, O_RDONLY);
  try {
    return new TextDecoder().decode(p.read(fd, 4096));
  } finally {
    p.close(fd);
  }
}
/** `echo > inject; echo FN > inject; printf %#x -ERR > FN/retval; probability 100, interval, times 1`. */
function arm(p: Process, fn: string, err: number, interval = 1): void {
  put(p, `${FF}/inject`, '\n');
  put(p, `${FF}/inject`, fn);
  put(p, `${FF}/${fn}/retval`, `0x${((1n << 64n) - BigInt(err)).toString(16)}`);
  put(p, `${FF}/probability`, '100');
  put(p, `${FF}/interval`, String(interval));
  put(p, `${FF}/times`, '1');
}

describe('fail_function', () => {
  it('lists the injectable functions; inject, !name, blanks; retval bounds; knobs', () => {
    const p = Host.boot({ memory: 1n << 30n }).kernel.spawn();
    expect(get(p, `${FF}/injectable`)).toBe('luo_file_freeze_one\tERRNO\nkho_finalize\tERRNO\niommu_liveupdate_flb_preserve\tERRNO\niommufd_liveupdate_preserve\tERRNO\nvfio_pci_liveupdate_preserve\tERRNO\n');
    expect(get(p, `${FF}/probability`)).toBe('0\n');
    expect(get(p, `${FF}/times`)).toBe('1\n');
    expectErrno(() => put(p, `${FF}/inject`, 'schedule'), 'EINVAL', 'write');
    put(p, `${FF}/inject`, 'kho_finalize\n');
    expectErrno(() => put(p, `${FF}/inject`, 'kho_finalize'), 'EBUSY', 'write');
    expect(get(p, `${FF}/kho_finalize/retval`)).toBe('ffffffffffffffea\n');
    expectErrno(() => put(p, `${FF}/kho_finalize/retval`, '0'), 'EINVAL', 'write');
    expectErrno(() => put(p, `${FF}/kho_finalize/retval`, '-12'), 'EINVAL', 'write');
    put(p, `${FF}/kho_finalize/retval`, '0xfffffffffffffff4');
    put(p, `${FF}/inject`, 'luo_file_freeze_one');
    expect(get(p, `${FF}/inject`)).toBe('kho_finalize\nluo_file_freeze_one\n');
    put(p, `${FF}/inject`, '!kho_finalize');
    expectErrno(() => put(p, `${FF}/inject`, '!kho_finalize'), 'ENOENT', 'write');
    expectErrno(() => p.open(`${FF}/kho_finalize/retval`, O_RDWR), 'ENOENT', 'open');
    put(p, `${FF}/inject`, ' \n');
    expect(get(p, `${FF}/inject`)).toBe('');
    put(p, `${FF}/times`, '-1');
    expect(get(p, `${FF}/times`)).toBe('-1\n');
    expectErrno(() => put(p, `${FF}/interval`, '-1'), 'EINVAL', 'write');
  });

  it('a failed freeze fails the reboot with its errno, nothing changes, a retry succeeds', () => {
    const h = Host.boot({ memory: 1n << 30n, cmdline: 'kho=on liveupdate=on' });
    const p = h.kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const fds: number[] = [];
    for (const name of ['a', 'b']) {
      const s = p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name }).fd;
      for (const token of [1n, 2n]) {
        const m = p.memfd_create(`${name}${token}`);
        p.ftruncate(m, PAGE);
        p.memWrite(p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, m), new TextEncoder().encode(`${name}${token}`));
        p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: m, token });
        fds.push(m);
      }
    }
    // The third file to freeze (session b, token 1) fails: interval 3, times 1.
    arm(p, 'luo_file_freeze_one', 28, 3);
    p.kexecFileLoad();
    expectErrno(() => p.reboot(LINUX_REBOOT_CMD_KEXEC), 'ENOSPC', 'reboot');
    expect(h.kernel.generation).toBe(0);
    expect(h.kernel.kho.active).toBe(false);
    expect(h.kernel.dmesg().some((l) => l.includes('forcing a failure of luo_file_freeze_one'))).toBe(true);
    // Still preserved, still frozen; sessions still usable.
    expectErrno(() => p.ftruncate(fds[0]!, 2n * PAGE), 'EPERM', 'ftruncate');
    expect(get(p, `${FF}/times`)).toBe('0\n');
    // KHO's finalisation fails next: EAGAIN.
    arm(p, 'kho_finalize', 12);
    expectErrno(() => p.reboot(LINUX_REBOOT_CMD_KEXEC), 'EAGAIN', 'reboot');
    expect(h.kernel.kho.active).toBe(false);
    expect(h.kernel.dmesg().some((l) => l.includes('kho_finalize failed -ENOMEM'))).toBe(true);
    p.reboot(LINUX_REBOOT_CMD_KEXEC);
    expect(h.kernel.generation).toBe(1);
    const q = h.kernel.spawn();
    // Nothing injected in the new kernel.
    expect(get(q, `${FF}/inject`)).toBe('');
    const l2 = q.open('/dev/liveupdate', O_RDWR);
    const b = q.ioctl(l2, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name: 'b' }).fd;
    const m = q.ioctl(b, LIVEUPDATE_SESSION_RETRIEVE_FD, { token: 2n }).fd;
    const va = q.mmap(null, PAGE, PROT_READ, MAP_SHARED, m);
    expect(new TextDecoder().decode(q.memRead(va, 2))).toBe('b2');
  });
});
