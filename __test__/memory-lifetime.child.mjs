// One scenario of __test__/memory.lifetime.test.ts, run in a fresh `node` process (no flags, no
// gc(), no await between iterations) against the built package (dist/ + the addon), so its RSS is
// the scenario's own. Usage: node memory-lifetime.child.mjs <scenario> <count> [warmup]
// stdout: ONE JSON line { scenario, count, warmup, rssStart, rssEnd, rssPeak, ms, ...extra }.
import {
  Host,
  LINUX_REBOOT_CMD_KEXEC,
  O_RDWR,
  O_WRONLY,
  PhysicalMemory,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  claimPersistentIommufd,
  createGuestRam,
  createPersistentVm,
  decodeFdt,
  encodeFdt,
  nativeFinalizers,
} from 'iommu-liveupdate';

const [scenario, countArg, warmupArg] = process.argv.slice(2);
const count = Number(countArg);
const warmup = Number(warmupArg ?? Math.max(1, Math.floor(count / 20)));
const MiB = 1n << 20n;
const MNT = '/mnt/guestmemfs';
const BDF = '0000:01:00.0';
const enc = (s) => new TextEncoder().encode(s);

/** A small host as a VMM test boots one: guestmemfs carve-out, a device on a persistent iommufd. */
function bootSmallVm(seed) {
  const host = Host.boot({ memory: 256n * MiB, seed, cmdline: 'guestmemfs=8M', devices: [{ bdf: BDF }] });
  const p = host.kernel.spawn();
  p.mount('guestmemfs', MNT);
  const ram = createGuestRam(p, 2n * MiB, `${MNT}/guest-ram`);
  p.memWrite(ram.va + 100n, enc('guest bytes'));
  const vm = createPersistentVm(p, { ram, maps: [{ iova: 1n << 32n }] });
  return { host, p, pid: vm.persistentId };
}

function liveUpdate(p) {
  const k = p.open('/sys/kernel/kho/active', O_WRONLY);
  p.write(k, '1');
  p.close(k);
  p.kexecFileLoad({});
  p.reboot(LINUX_REBOOT_CMD_KEXEC);
}

/** The VMM after the jump: claim the persisted iommufd, re-open the device, bind and attach. */
function reattach(p, pid) {
  const fd = claimPersistentIommufd(p, pid);
  const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
  p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
  p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 1 });
}

/** A tree whose blob is about 36 KB: 200 nodes of three properties each. */
function bigTree() {
  const children = [];
  for (let i = 0; i < 200; i++) {
    children.push({
      name: `node@${i.toString(16)}`,
      properties: [
        { name: 'compatible', value: enc(`vendor,device-${i}\0`) },
        { name: 'reg', value: new Uint8Array(64).fill(i) },
        { name: 'data', value: new Uint8Array(24 + (i % 5) * 10).fill(i ^ 0x5a) },
      ],
      children: [],
    });
  }
  return { name: '', properties: [{ name: 'model', value: enc('memory lifetime\0') }], children };
}

const rss = () => process.memoryUsage().rss;
let peak = 0;
const sample = () => {
  const r = rss();
  if (r > peak) peak = r;
  return r;
};
const extra = {};

let step;
switch (scenario) {
  case 'hosts': {
    let seed = 0;
    step = () => {
      const vm = bootSmallVm(seed++);
      if (vm.host.kernel.dead) throw new Error('booted a dead kernel');
    };
    break;
  }
  case 'updates': {
    const vm = bootSmallVm(1);
    let p = vm.p;
    step = () => {
      liveUpdate(p);
      p = vm.host.kernel.spawn();
      reattach(p, vm.pid);
    };
    extra.host = vm.host;
    break;
  }
  case 'frames': {
    const mem = new PhysicalMemory({ size: 1n << 30n, seed: 3n });
    const data = new Uint8Array(4096).fill(0xa5);
    step = () => {
      const pa = mem.alloc(0);
      mem.write(pa, data);
      mem.free(pa);
    };
    extra.mem = mem;
    break;
  }
  case 'fdt': {
    const blob = encodeFdt(bigTree());
    extra.blobBytes = blob.length;
    step = () => {
      const t = decodeFdt(blob);
      if (t.children.length !== 200) throw new Error('bad decode');
    };
    break;
  }
  default:
    throw new Error(`unknown scenario ${scenario}`);
}

for (let i = 0; i < warmup; i++) step();
const rssStart = sample();
const t0 = performance.now();
const every = Math.max(1, Math.floor(count / 50));
for (let i = 0; i < count; i++) {
  step();
  if (i % every === 0) sample();
}
const ms = performance.now() - t0;
const rssEnd = sample();
const mu = process.memoryUsage();
const out = { scenario, nativeFinalizers, count, warmup, rssStart, rssEnd, rssPeak: peak, ms: Math.round(ms), heapUsed: mu.heapUsed, external: mu.external, arrayBuffers: mu.arrayBuffers };
if (extra.mem) Object.assign(out, { stats: extra.mem.stats() });
if (extra.host) {
  const h = extra.host;
  Object.assign(out, { generation: h.kernel.generation, generations: h.generations.length, stats: h.memory.stats() });
}
if (extra.blobBytes) out.blobBytes = extra.blobBytes;
process.stdout.write(`${JSON.stringify(out, (_, v) => (typeof v === 'bigint' ? Number(v) : v))}\n`);
