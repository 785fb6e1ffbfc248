// Two builds of the live update side by side in ONE process: both trees' dist/ loaded, their
// updates alternated round by round (RFC flow: KHO activation → kexec → claim → re-bind; LUO flow:
// reboot → retrieve → re-attach → FINISH), so a shared machine's load hits both alike. Prints one
// JSON line: per flow and build the median CPU time (process.cpuUsage) and the median and best
// wall time of the blackout, and the LUO preparation's CPU time.
// usage: node --expose-gc bench/liveupdate-ab.mjs <old dist dir> <new dist dir> [mappings=1048576] [rounds=11]
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [oldDir, newDir, nArg = '1048576', rArg = '11'] = process.argv.slice(2);
if (!oldDir || !newDir || !globalThis.gc) {
  process.stderr.write('usage: node --expose-gc bench/liveupdate-ab.mjs <old dist dir> <new dist dir> [mappings] [rounds]\n');
  process.exit(2);
}
const n = Number(nArg), R = Number(rArg);
const load = (dir) => import(pathToFileURL(resolve(dir, 'index.js')).href);
const OLD = await load(oldDir);
const NEW = await load(newDir);
const gc = globalThis.gc; const hr = process.hrtime.bigint;
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) * 1000; };
const BDF = '0000:01:00.0', IOVA = 1n << 32n, len = BigInt(n) * 4096n;
function rfc(m) {
  const host = m.Host.boot({ memory: 64n << 30n, seed: 1n, cmdline: 'guestmemfs=8G', devices: [{ bdf: BDF }] });
  let p = host.kernel.spawn();
  p.mount('guestmemfs', '/mnt/guestmemfs');
  const ram = m.createGuestRam(p, len, '/mnt/guestmemfs/guest-ram');
  for (let off = 0n; off < ram.size; off += 2n << 20n) p.memWrite(ram.va + off, Uint8Array.of(1));
  const vm = m.createPersistentVm(p, { ram, hugePages: false, attachFirst: true, maps: [{ iova: IOVA }] });
  let hwpt = null;
  return () => {
    const active = p.open('/sys/kernel/kho/active', m.O_WRONLY); gc();
    const c0 = cpu(), t0 = hr();
    p.write(active, '1'); p.kexecFileLoad({}); p.reboot(m.LINUX_REBOOT_CMD_KEXEC);
    p = host.kernel.spawn(); const fd = m.claimPersistentIommufd(p, 1);
    const d = p.open('/dev/vfio/devices/vfio0', m.O_RDWR);
    p.ioctl(d, m.VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    const got = p.ioctl(d, m.VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwpt ?? vm.ioasId }).pt_id; hwpt ??= got;
    return [Number(hr() - t0), cpu() - c0];
  };
}
function luo(m, prep) {
  const host = m.Host.boot({ memory: 64n << 30n, seed: 1n, cmdline: 'kho=on liveupdate=on', devices: [{ bdf: BDF }] });
  let vm = m.createLuoVm(host, { ram: len, iova: IOVA, hugePages: false });
  for (let off = 0n; off < len; off += 2n << 20n) vm.process.memWrite(vm.va + off, Uint8Array.of(1));
  let k = 0;
  return () => {
    gc(); const p0 = cpu(); const saved = m.preserveLuoVm(vm, `vm${k++}`); prep.push(cpu() - p0); gc();
    const c0 = cpu(), t0 = hr();
    vm.process.kexecFileLoad({}); vm.process.reboot(m.LINUX_REBOOT_CMD_KEXEC);
    const got = m.retrieveLuoVm(host, saved, { reattach: false, finish: false });
    m.reattachLuoVm(got); m.finishLuoVm(got); vm = got;
    return [Number(hr() - t0), cpu() - c0];
  };
}
const prepOld = [], prepNew = [];
const worlds = { 'RFC old': rfc(OLD), 'RFC new': rfc(NEW), 'LUO old': luo(OLD, prepOld), 'LUO new': luo(NEW, prepNew) };
const res = Object.fromEntries(Object.keys(worlds).map((k) => [k, { wall: [], cpu: [] }]));
for (const f of Object.values(worlds)) f(); // warm-up
for (let r = 0; r < R; r++) {
  const order = r & 1 ? ['RFC new', 'RFC old', 'LUO new', 'LUO old'] : ['RFC old', 'RFC new', 'LUO old', 'LUO new'];
  for (const k of order) { const [w, c] = worlds[k](); res[k].wall.push(w); res[k].cpu.push(c); }
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
const ms = (x) => (x / 1e6).toFixed(2);
console.log(JSON.stringify({ n, rounds: R, prepCpuOld: ms(med(prepOld)), prepCpuNew: ms(med(prepNew)), ...Object.fromEntries(Object.entries(res).map(([k, v]) => [k, { wallMedian: ms(med(v.wall)), wallBest: ms(Math.min(...v.wall)), cpuMedian: ms(med(v.cpu)) }])) }));
