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

for tool in gcc make flex bison bc cpio gzip busybox qemu-system-x86_64; do
  command -v "$tool" >/dev/null || [ -x "/bin/$tool" ] || {
    echo "oracle: $tool not found (apt-get install build-essential flex bison bc libelf-dev libssl-dev libcap-dev busybox-static qemu-system-x86 cpio xz-utils)" >&2; exit 1; }
done

src="$("$here/fetch-source.sh")"
kbuild="$cache/kbuild-$kernel_key"
if [ ! -f "$kbuild/.done" ]; then
  mkdir -p "$kbuild"
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
  touch "$kbuild/.done"
fi

rm -rf "$lab.tmp"; mkdir -p "$lab.tmp/root"/{bin,sbin,dev,proc,sys,tmp,seq,run}
cp "$kbuild/arch/x86/boot/bzImage" "$lab.tmp/bzImage"
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
# The upstream LUO selftests (nolibc, as the kernel's own vmtest.sh builds them).
lu="$st/liveupdate"
for t in liveupdate luo_kexec_simple luo_multi_session; do
  extra=(); [ "$t" = liveupdate ] || extra=("$lu/luo_test_utils.c")
  gcc -static -O2 -nostdlib -fno-asynchronous-unwind-tables -fno-ident -fno-stack-protector \
    -include "$src/tools/include/nolibc/nolibc.h" -I "$src/tools/include/nolibc" "${inc[@]}" -I "$st" \
    -o "$lab.tmp/root/bin/$t" "$lu/$t.c" "${extra[@]}" -lgcc 2>>"$lab.tmp/luo.build.log" \
    || echo "oracle: $t did not build (see $lab/luo.build.log)" >&2
done
cp /bin/busybox "$lab.tmp/root/bin/busybox"
for a in sh mount mkdir cat echo ls poweroff sleep grep; do ln -sf busybox "$lab.tmp/root/bin/$a"; done
install -m 0755 "$here/guest/init" "$lab.tmp/root/init"
(cd "$lab.tmp/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$lab.tmp/initramfs.cpio.gz"
touch "$lab.tmp/.done"
rm -rf "$lab"; mv "$lab.tmp" "$lab"
echo "$lab"
