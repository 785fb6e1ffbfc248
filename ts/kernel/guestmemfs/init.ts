// guestmemfs at boot: the `guestmemfs=` early param reserves the carve-out, unless the previous
// kernel handed one over through KHO; the filesystem type registers for mount(2) either way.
import { errno, KernelError } from '../../uapi/errno.js';
import type { KhoNode } from '../kho/kho.js';
import type { KernelServices } from '../services.js';
import { Guestmemfs, memparse } from './guestmemfs.js';

/** Restores or reserves the carve-out (null without one) and registers `guestmemfs`. */
export function guestmemfsInit(svc: KernelServices, node: KhoNode | undefined): Guestmemfs | null {
  let fs: Guestmemfs | null = null;
  if (node) {
    try {
      fs = Guestmemfs.restore(svc, svc.memory, node);
    } catch (e) {
      svc.log(`KHO: guestmemfs not restored: ${e instanceof KernelError ? e.detail : String(e)}`);
    }
  }
  if (!fs) {
    const gm = /(?:^|\s)guestmemfs=(\S+)/.exec(svc.cmdline);
    fs = gm ? Guestmemfs.carveOut(svc, svc.memory, memparse(gm[1]!)) : null;
  }
  svc.registerFilesystem({
    name: 'guestmemfs',
    mount(path) {
      if (!fs) return errno('ENOMEM', 'no guestmemfs= carve-out at boot');
      if (fs.mountpoint) errno('EBUSY', `guestmemfs is already mounted on ${fs.mountpoint}`);
      fs.mountpoint = path;
      // Mounting the restored superblock ends the handover: writable again.
      if (fs.serialised && !svc.kho.active) fs.khoAbort();
      svc.log(`guestmemfs: mounted on ${fs.mountpoint}`);
      return fs;
    },
  });
  return fs;
}
