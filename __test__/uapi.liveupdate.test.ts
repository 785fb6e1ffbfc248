// include/uapi/linux/liveupdate.h as ts/uapi/liveupdate.ts lays it out, and the inline byte-array
// field (`__u8 name[64]`) it needs: through struct(), Process.ioctl's object form and the oracle's
// sequence format (`name=str(...)` / `name=hex(...)`, printed as hex).
import { describe, expect, it } from 'vitest';
import {
  Host,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  UAPI_IOCTLS_BY_NAME,
  liveupdate_ioctl_create_session,
  liveupdate_session_finish,
  liveupdate_session_get_name,
  liveupdate_session_preserve_fd,
  struct,
} from 'iommu-liveupdate';
import { parseSequences, runOnSimulator, uapiLayoutsHeader } from '../ts/oracle/index.js';
import { checkFieldValue, getBytes, setField } from '../ts/uapi/struct.js';

describe('include/uapi/linux/liveupdate.h', () => {
  it('encodes the commands as _IO(0xBA, nr)', () => {
    expect(LIVEUPDATE_IOCTL_CREATE_SESSION).toBe(0xba00);
    expect(LIVEUPDATE_IOCTL_RETRIEVE_SESSION).toBe(0xba01);
    expect(LIVEUPDATE_SESSION_PRESERVE_FD).toBe(0xba40);
    expect(LIVEUPDATE_SESSION_RETRIEVE_FD).toBe(0xba41);
    expect(LIVEUPDATE_SESSION_FINISH).toBe(0xba42);
    expect(LIVEUPDATE_SESSION_GET_NAME).toBe(0xba43);
    expect(UAPI_IOCTLS_BY_NAME.get('LIVEUPDATE_SESSION_GET_NAME')?.request).toBe(0xba43);
  });

  it('lays the structs out as the C compiler does', () => {
    expect(liveupdate_ioctl_create_session.size).toBe(72);
    expect(liveupdate_ioctl_create_session.byName.get('name')).toMatchObject({ offset: 8, size: 64, out: false });
    expect(liveupdate_ioctl_create_session.byName.get('fd')).toMatchObject({ offset: 4, size: 4, out: true });
    expect(liveupdate_session_preserve_fd.size).toBe(16);
    expect(liveupdate_session_preserve_fd.byName.get('token')!.offset).toBe(8);
    expect(liveupdate_session_finish.size).toBe(8);
    expect(liveupdate_session_get_name.byName.get('name')).toMatchObject({ offset: 8, size: 64, out: true });
    // A byte array aligns to 1: it packs right after a u8 and pads the struct to its widest scalar.
    const s = struct('s', [['a', 'u8'], ['b', 'u8[3]'], ['c', 'u32'], ['d', 'u8[5]']]);
    expect(s.byName.get('b')!.offset).toBe(1);
    expect(s.byName.get('c')!.offset).toBe(4);
    expect(s.size).toBe(16);
  });

  it('puts byte arrays in the guest table with a static assertion each', () => {
    const h = uapiLayoutsHeader();
    expect(h).toContain('sizeof(((struct liveupdate_session_get_name *)0)->name) == 64');
    expect(h).toContain('{ "name", 8, 64, 1, 1 }');
    expect(h).toContain('{ "token", 8, 8, 0, 0 }');
  });
});

describe('a byte-array field', () => {
  const name = liveupdate_ioctl_create_session.byName.get('name')!;

  it('takes a string or bytes of at most its length, NUL-padded', () => {
    const v = checkFieldValue(liveupdate_ioctl_create_session, name, 'abc') as Uint8Array;
    expect(v.length).toBe(64);
    expect([...v.subarray(0, 4)]).toEqual([0x61, 0x62, 0x63, 0]);
    expect((checkFieldValue(liveupdate_ioctl_create_session, name, new Uint8Array(64).fill(0x41)) as Uint8Array)[63]).toBe(0x41);
    expect(() => checkFieldValue(liveupdate_ioctl_create_session, name, 'x'.repeat(65))).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => checkFieldValue(liveupdate_ioctl_create_session, name, 5)).toThrow(TypeError);
    const buf = new Uint8Array(72).fill(0xff);
    setField(new DataView(buf.buffer), name, new Uint8Array([1, 2]));
    expect([...getBytes(new DataView(buf.buffer), name).subarray(0, 3)]).toEqual([1, 2, 0]);
    expect(buf[7]).toBe(0xff);
  });

  it('goes through Process.ioctl as an object field (no /dev/liveupdate without liveupdate=on)', () => {
    const host = Host.boot({ memory: 1n << 30n });
    const p = host.kernel.spawn();
    const fd = p.memfd_create('m');
    expect(() => p.ioctl(fd, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 'sess' })).toThrow(expect.objectContaining({ code: 'ENOTTY' }));
    expect(() => p.ioctl(fd, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: new Uint8Array(65) })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => p.open('/dev/liveupdate', 2)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    p.exit();
  });

  it('reads str(...) and hex(...) in sequences and prints as hex', () => {
    const [seq] = parseSequences(
      [
        '== t',
        'm: memfd_create m',
        'ioctl $m LIVEUPDATE_IOCTL_CREATE_SESSION name=str(abc)',
        'ioctl $m LIVEUPDATE_IOCTL_CREATE_SESSION name=hex(6162)',
        'ioctl $m LIVEUPDATE_IOCTL_CREATE_SESSION name=hex(616)',
        `ioctl $m LIVEUPDATE_IOCTL_CREATE_SESSION name=str(${'x'.repeat(65)})`,
        'ioctl $m LIVEUPDATE_IOCTL_CREATE_SESSION name=7',
        'ioctl $m LIVEUPDATE_SESSION_GET_NAME',
        'ioctl $m 0xba44',
      ].join('\n'),
    );
    const out = runOnSimulator(seq!);
    expect(out[1]).toEqual({ seq: 't', step: 1, op: 'ioctl', cmd: 'LIVEUPDATE_IOCTL_CREATE_SESSION', out: { fd: '0x0' }, ret: -1, errno: 'ENOTTY' });
    expect(out[2]).toMatchObject({ ret: -1, errno: 'ENOTTY' });
    expect(out[3]).toEqual({ seq: 't', step: 3, error: 'bad value hex(616)' });
    expect(out[4]).toEqual({ seq: 't', step: 4, error: `bad value str(${'x'.repeat(65)})` });
    expect(out[5]).toEqual({ seq: 't', step: 5, error: 'bad value 7' });
    expect(out[6]).toMatchObject({ cmd: 'LIVEUPDATE_SESSION_GET_NAME', out: { name: '00'.repeat(64) }, errno: 'ENOTTY' });
    expect(out[7]).toEqual({ seq: 't', step: 7, op: 'ioctl', cmd: '0xba44', ret: -1, errno: 'ENOTTY' });
  });
});

describe('the kexec step on the simulator', () => {
  it('kexecs the simulated host and goes on in a fresh process of the next kernel', () => {
    const [seq] = parseSequences(['== k', 'm: memfd_create m', 'v: mmap 0x1000', 'kexec', 'close $m', 'close 3', 'n: memfd_create n', 'mmap 0x1000'].join('\n'));
    const out = runOnSimulator(seq!);
    expect(out[2]).toEqual({ seq: 'k', step: 2, op: 'kexec', ret: 0 });
    // Labels are gone; so are the fds; the arena starts over.
    expect(out[3]).toEqual({ seq: 'k', step: 3, error: 'bad value $m' });
    expect(out[4]).toMatchObject({ op: 'close', ret: -1, errno: 'EBADF' });
    expect(out[5]).toMatchObject({ op: 'memfd_create', ret: 'fd' });
    expect(out[6]).toEqual({ seq: 'k', step: 6, op: 'mmap', ret: `0x${(1n << 32n).toString(16)}` });
    expect(out.at(-1)).toEqual({ seq: 'k', end: true });
  });
});
