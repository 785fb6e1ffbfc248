#!/usr/bin/env bash
# Build the real-kernel lab: Linux from Debian's source package (oracle/lab.env) with the
# fragment oracle/kernel.config on tinyconfig, the uAPI headers, the guest programs (static),
# and a busybox initramfs. Everything lands in $ORACLE_CACHE/lab-<key>, keyed by the kernel
# version, the fragment and the guest sources, so a second run is a cache hit in seconds.
# Prints the lab directory. Host packages: see README ("The real kernel as the judge").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lab.env"
cache="${ORACLE_CACHE:-$here/../.cache/oracle}"
jobs="$(nproc)"

kernel_key="$(cat "$here/lab.env" "$here/kernel.config" | sha256sum | cut -c1-12)"
guest_key="$(cat "$here/lab.env" "$here/kernel.config" "$here/build.sh" "$here"/guest/* | sha256sum | cut -c1-12)"
lab="$cache/lab-$guest_key"
if [ -f "$lab/.done" ]; then echo "$lab"; exit 0; fi

for tool in gcc make flex bison bc cpio gzip rsync busybox qemu-system-x86_64; do
  command -v "$tool" >/dev/null || [ -x "/bin/$tool" ] || {
    echo "oracle: $tool not found (apt-get install build-essential flex bison bc libelf-dev libssl-dev libcap-dev busybox-static qemu-system-x86 cpio xz-utils rsync)" >&2; exit 1; }
done

src="$("$here/fetch-source.sh")"
# One build tree: a changed fragment rebuilds incrementally (seconds to a minute, not minutes).
kbuild="$cache/kbuild"
if [ "$(cat "$kbuild/.done" 2>/dev/null)" != "$kernel_key" ]; then
  mkdir -p "$kbuild"; rm -f "$kbuild/.done"
  make -s -C "$src" O="$kbuild" tinyconfig >&2
  "$src/scripts/kconfig/merge_config.sh" -m -O "$kbuild" "$kbuild/.config" "$here/kernel.config" >&2
  make -s -C "$src" O="$kbuild" olddefconfig >&2
  # Every option the fragment sets must have landed: a silently dropped dependency is a lab bug.
  missing=0
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*) grep -qxF "$line" "$kbuild/.config" || { echo "oracle: $line did not land in .config" >&2; missing=1; } ;;
      "# CONFIG_"*" is not set") opt="${line#\# }"; opt="${opt%% *}"
        if grep -q "^$opt=" "$kbuild/.config"; then echo "oracle: $opt should be unset" >&2; missing=1; fi ;;
    esac
  done < "$here/kernel.config"
  [ "$missing" = 0 ] || exit 1
  make -s -C "$src" O="$kbuild" -j"$jobs" bzImage >&2
  make -s -C "$src" O="$kbuild" headers_install INSTALL_HDR_PATH="$kbuild/usr" >&2
  echo "$kernel_key" > "$kbuild/.done"
fi

rm -rf "$lab.tmp"; mkdir -p "$lab.tmp/root"/{bin,sbin,dev,proc,sys,tmp,seq,run,boot}
cp "$kbuild/arch/x86/boot/bzImage" "$lab.tmp/bzImage"
# The guest driver's `kexec` step loads the same kernel (and the initrd it booted with, which
# retain_initrd keeps in /sys/firmware/initrd).
cp "$kbuild/arch/x86/boot/bzImage" "$lab.tmp/root/boot/bzImage"
cp "$kbuild/.config" "$lab.tmp/kernel.config"
make -s -C "$src" O="$kbuild" kernelrelease > "$lab.tmp/kernelrelease"
inc=(-I "$kbuild/usr/include")
cflags=(-static -O2 -Wall -Wno-unused-result)
# Our sequence driver.
gcc "${cflags[@]}" "${inc[@]}" -o "$lab.tmp/root/bin/seqrun" "$here/guest/seqrun.c"
# The upstream iommufd selftest, built from the same source tree.
st="$src/tools/testing/selftests"
gcc "${cflags[@]}" "${inc[@]}" -I "$st" -I "$src/tools/include" -D_GNU_SOURCE \
  -o "$lab.tmp/root/bin/iommufd" "$st/iommu/iommufd.c" -lcap -lpthread 2>"$lab.tmp/iommufd.build.log" \
  || { cat "$lab.tmp/iommufd.build.log" >&2; exit 1; }
# The upstream LUO selftests: `liveupdate` (kselftest harness, libc) runs in our initramfs; each
# kexec test gets its own initramfs around the upstream init.c (nolibc), as the kernel's
# vmtest.sh assembles it: stage 1, kexec_file_load of /kernel with /initrd.img, stage 2.
lu="$st/liveupdate"
gcc "${cflags[@]}" "${inc[@]}" -I "$st" -I "$lu/lib/include" -D_GNU_SOURCE -o "$lab.tmp/root/bin/liveupdate" \
  "$lu/liveupdate.c" "$lu/lib/lu_utils.c" 2>"$lab.tmp/luo.build.log" || { cat "$lab.tmp/luo.build.log" >&2; exit 1; }
nolibc=(-static -nostdinc -nostdlib -fno-asynchronous-unwind-tables -fno-ident -fno-stack-protector
  -I "$kbuild/usr/include" -I "$src/tools/include/nolibc" -I "$lu/lib/include")
gcc "${nolibc[@]}" -Os -o "$lab.tmp/luo-init" "$lu/init.c"
for t in luo_kexec_simple luo_multi_session; do
  d="$lab.tmp/$t"; mkdir -p "$d/inner"/{dev,proc,debugfs} "$d/outer"/{dev,proc,debugfs}
  gcc "${nolibc[@]}" -O2 -o "$d/inner/test_binary" "$lu/$t.c" "$lu/lib/lu_utils.c"
  cp "$lab.tmp/luo-init" "$d/inner/init"
  (cd "$d/inner" && find . | cpio -o -H newc --quiet) > "$d/outer/initrd.img"
  cp "$d/inner/init" "$d/inner/test_binary" "$d/outer/"
  cp "$kbuild/arch/x86/boot/bzImage" "$d/outer/kernel"
  (cd "$d/outer" && find . | cpio -o -H newc --quiet | gzip -1) > "$lab.tmp/$t.cpio.gz"
  rm -rf "$d"
done
cp /bin/busybox "$lab.tmp/root/bin/busybox"
for a in sh mount mkdir cat echo ls poweroff sleep grep sed; do ln -sf busybox "$lab.tmp/root/bin/$a"; done
install -m 0755 "$here/guest/init" "$lab.tmp/root/init"
(cd "$lab.tmp/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$lab.tmp/initramfs.cpio.gz"
qemu_version="$(qemu-system-x86_64 --version | head -1 | sed 's/ (.*//')"
cat > "$lab.tmp/lab.json" <<JSON
{
  "kernel": "$KERNEL_PKG_VERSION",
  "release": "$(cat "$lab.tmp/kernelrelease")",
  "qemu": "$qemu_version",
  "machine": "q35 intel-iommu,intremap=on,caching-mode=on + edu",
  "qemuArgs": ["-machine", "q35,kernel-irqchip=split", "-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "2",
    "-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot",
    "-device", "intel-iommu,intremap=on,caching-mode=on", "-device", "edu"],
  "cmdline": "console=ttyS0 intel_iommu=on liveupdate=on panic=-1 quiet loglevel=1"
}
JSON
touch "$lab.tmp/.done"
rm -rf "$lab"; mv "$lab.tmp" "$lab"
# Labs of other guest sources go once they are a day old (each is about 15 MB).
find "$cache" -maxdepth 1 -name 'lab-*' ! -name "lab-$guest_key" -mtime +0 -exec rm -rf {} + 2>/dev/null || true
echo "$lab"
