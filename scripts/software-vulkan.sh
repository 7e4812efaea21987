#!/usr/bin/env bash
# Usage: scripts/software-vulkan.sh DIR
#
# Puts a software Vulkan driver and the Vulkan loader into DIR, so that the WebGPU provider that onnxruntime-node
# bundles finds an adapter on a machine without a GPU: for checking the WebGPU path (the tests, npm run gpu-check),
# not for speed (it is a CPU emulating a GPU, far slower than --device cpu). Debian 12 (bookworm): Mesa's lavapipe
# from bookworm-backports (bookworm's own Mesa 22.3 is too old: Dawn refuses it), the libdrm it needs and Debian's
# libvulkan1, downloaded with apt-get into DIR (private package lists and cache: the system's apt sources, lists
# and cache are not touched) and unpacked there with dpkg-deb. Nothing is installed system-wide: the machine itself
# still has no adapter. Then start a process with
#
#   LD_LIBRARY_PATH=DIR/lib VK_DRIVER_FILES=DIR/lvp.json node ...
#
# (the dynamic loader reads LD_LIBRARY_PATH when a process starts). Quiet on success; run again with DIR in place, it
# downloads nothing (and rewrites DIR/lvp.json if DIR has moved); a failure is told in one line on stderr, with the
# details in DIR/setup.log.
set -euo pipefail

fail() {
  echo "software-vulkan.sh: $*" >&2
  exit 1
}
[[ $# -eq 1 && -n $1 ]] || fail "usage: scripts/software-vulkan.sh DIR (the folder to put the software Vulkan driver in)"
mkdir -p "$1" || fail "cannot create $1"
dir=$(cd "$1" && pwd)
case $dir in *'"'* | *'\'* | *:*) fail "$dir: choose a folder whose path has no quote, backslash or colon (it goes into a JSON file and a search path)" ;; esac
log=$dir/setup.log

download() {
  local tool codename apt keyring signed='' deb manifest
  for tool in apt-get dpkg-deb ldd; do
    command -v "$tool" >/dev/null || fail "needs $tool: this script takes Mesa's lavapipe from Debian 12 (bookworm) packages"
  done
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  [[ $codename == bookworm ]] ||
    fail "made for Debian 12 (bookworm), this is ${codename:-an unknown release}: install your distribution's mesa-vulkan-drivers (Mesa 24 or later) and libvulkan1 instead"
  apt=$dir/apt
  rm -rf "$dir/root" "$dir/lib" "$dir/lvp.json" "$apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$dir/root"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [[ -f $keyring ]] && signed="[signed-by=$keyring] "
  {
    echo "deb ${signed}http://deb.debian.org/debian bookworm main"
    echo "deb ${signed}http://deb.debian.org/debian bookworm-backports main"
  } >"$apt/sources.list"
  local opts=(
    -o "Dir::Etc::SourceList=$apt/sources.list"
    -o "Dir::Etc::SourceParts=-"
    -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache"
  )
  # as root, apt downloads as the user _apt, who may not write into DIR
  [[ $EUID -eq 0 ]] && opts+=(-o "APT::Sandbox::User=root")
  local packages=(mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports libdrm-amdgpu1/bookworm-backports libvulkan1/bookworm)
  : >"$log"
  apt-get "${opts[@]}" update >>"$log" 2>&1 ||
    fail "could not read the package lists of deb.debian.org (bookworm, bookworm-backports): $(grep -m 1 -E '^(E|W):' "$log" || tail -n 1 "$log") (all of it in $log)"
  (cd "$apt/debs" && apt-get "${opts[@]}" download "${packages[@]}") >>"$log" 2>&1 ||
    fail "could not download ${packages[*]}: $(grep -m 1 -E '^(E|W):' "$log" || tail -n 1 "$log") (all of it in $log)"
  for deb in "$apt/debs"/*.deb; do
    echo "unpacking $(basename "$deb")" >>"$log"
    dpkg-deb -x "$deb" "$dir/root" >>"$log" 2>&1 || fail "could not unpack $deb (see $log)"
  done
  manifest=$(find "$dir/root/usr/share/vulkan/icd.d" -name 'lvp_icd*.json' -print -quit 2>/dev/null || true)
  [[ -n $manifest ]] && sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1 >"$dir/api-version"
  # only lavapipe, the loader and libdrm are kept (the package's hardware drivers are some 50 MB), and no package lists
  find "$dir/root" \( -name 'libvulkan_*.so' ! -name libvulkan_lvp.so -o -name 'libVkLayer_*' \) -delete
  rm -rf "$dir/root/usr/share" "$dir/root/etc" "$apt"
}

lavapipe() { find "$dir/root/usr/lib" -name libvulkan_lvp.so -print -quit 2>/dev/null || true; }
driver=$(lavapipe)
if [[ -z $driver || ! -e $(dirname "$driver")/libvulkan.so.1 ]]; then
  download
  driver=$(lavapipe)
  [[ -n $driver ]] || fail "mesa-vulkan-drivers holds no lavapipe (libvulkan_lvp.so) any more (see $log)"
fi
libdir=$(dirname "$driver")
[[ -e $libdir/libvulkan.so.1 ]] || fail "libvulkan1 holds no libvulkan.so.1 in $libdir (see $log)"

# a bare "libvulkan_lvp.so" would not be looked for in DIR: the manifest names the driver by its absolute path
manifest=$(printf '{\n  "file_format_version": "1.0.0",\n  "ICD": {\n    "library_path": "%s",\n    "api_version": "%s"\n  }\n}' \
  "$driver" "$(cat "$dir/api-version" 2>/dev/null || echo 1.3.0)")
[[ -f $dir/lvp.json && $(cat "$dir/lvp.json") == "$manifest" && -e $dir/lib/libvulkan_lvp.so ]] && exit 0

missing=$(LD_LIBRARY_PATH=$libdir ldd "$driver" | awk '/not found/ { print $1 }' | tr '\n' ' ')
[[ -z $missing ]] ||
  fail "lavapipe needs ${missing% }, which this system lacks (Debian: apt-get install the packages that hold them, e.g. libllvm15 for libLLVM-15.so.1)"
ln -sfn "${libdir#"$dir/"}" "$dir/lib"
echo "$manifest" >"$dir/lvp.json.tmp"
mv "$dir/lvp.json.tmp" "$dir/lvp.json"
