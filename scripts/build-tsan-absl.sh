#!/usr/bin/env bash
# Builds Debian's own Abseil (same version, same Debian patches, same sonames) with
# -fsanitize=thread into PREFIX (default: .cache/tsan-absl), for the `tsan` preset.
#
# Why: Debian's libabsl is not instrumented, so every absl::Mutex in cpserve (and in
# gRPC, which uses absl's synchronisation) is invisible to ThreadSanitizer and each
# lock-protected access reads as a data race. The tsan preset compiles against this
# build and its tests load it first (LD_LIBRARY_PATH), so gRPC's absl calls go through
# the instrumented copy too. Idempotent: does nothing when PREFIX is complete.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$root/.cache/tsan-absl}
version=20220623.1
debrev=1+deb12u2
if [[ -f $prefix/.complete ]]; then
  echo "tsan abseil: $prefix is up to date"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pool=http://deb.debian.org/debian/pool/main/a/abseil
cd "$work"
for f in "abseil_${version}.orig.tar.gz" "abseil_${version}-${debrev}.debian.tar.xz"; do
  curl -fsSL --retry 3 -o "$f" "$pool/$f"
done
tar xzf "abseil_${version}.orig.tar.gz"
cd "abseil-${version}"
tar xJf "../abseil_${version}-${debrev}.debian.tar.xz"
while read -r p; do
  [[ -z $p || $p == \#* ]] && continue
  patch -p1 -s <"debian/patches/$p"
done <debian/patches/series
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_STANDARD=17 \
  -DBUILD_SHARED_LIBS=ON -DCMAKE_CXX_FLAGS="-fsanitize=thread" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" -DCMAKE_INSTALL_PREFIX="$prefix" \
  "${launcher[@]}" >/dev/null
cmake --build build -j "${JOBS:-$(nproc)}"
cmake --install build >/dev/null
touch "$prefix/.complete"
echo "tsan abseil: installed in $prefix"
