#!/usr/bin/env bash
# Fetch Debian's linux-source-7.3 into $ORACLE_CACHE/src without touching the system's apt
# configuration: a private sources list, lists and archive cache under the cache directory.
# Prints the path of the unpacked source tree. The kernel source is never committed (GPL-2.0).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lab.env"
cache="${ORACLE_CACHE:-$here/../.cache/oracle}"
apt_dir="$cache/apt"
tree="$cache/src/linux-source-$KERNEL_SERIES"
if [ -f "$tree/.unpacked-$KERNEL_PKG_VERSION" ]; then echo "$tree"; exit 0; fi

mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$cache/src"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $KERNEL_SUITE main" > "$apt_dir/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "Dir::Cache::archives=$apt_dir/archives"
  -o "Dir::State::status=$apt_dir/status" -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1"
)
touch "$apt_dir/status"
deb="$apt_dir/linux-source-${KERNEL_SERIES}_${KERNEL_PKG_VERSION}_all.deb"
if [ ! -f "$deb" ]; then
  apt-get "${apt_opts[@]}" update >&2
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" download "linux-source-$KERNEL_SERIES=$KERNEL_PKG_VERSION" >&2)
fi
work="$cache/src/deb"
rm -rf "$work" "$tree"; mkdir -p "$work"
dpkg-deb -x "$deb" "$work"
tar -C "$cache/src" -xf "$work/usr/src/linux-source-$KERNEL_SERIES.tar.xz"
rm -rf "$work"
touch "$tree/.unpacked-$KERNEL_PKG_VERSION"
echo "$tree"
