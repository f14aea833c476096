#!/bin/sh
# runtime-packages.sh BINARY...: prints the Debian packages that own the shared libraries
# the binaries load (ldd), one per line, so that the runtime image installs only those.
# Runs in the build stage, where the build dependencies (scripts/install-deps.sh) are.
# Fails when a library belongs to no package (it would be missing at run time).
set -eu
# The driver (libcuda, libnvidia-*) is mounted from the node at run time.
missing=$(for bin in "$@"; do ldd "$bin"; done | awk '$3 == "not" && $1 !~ /^lib(cuda|nvidia-)/ { print $1 }')
[ -z "$missing" ] || { echo "runtime-packages.sh: libraries not found: $missing" >&2; exit 1; }
libs=$(for bin in "$@"; do ldd "$bin"; done | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u)
[ -n "$libs" ] || { echo "runtime-packages.sh: no shared libraries found" >&2; exit 1; }
packages=""
for lib in $libs; do
  real=$(readlink -f "$lib")
  owner=""
  # Debian 12 merges /lib into /usr/lib; dpkg knows each file under one of the two names.
  for path in "$lib" "$real" "/usr$real" "${real#/usr}"; do
    if owner=$(dpkg -S "$path" 2>/dev/null); then
      break
    fi
    owner=""
  done
  if [ -z "$owner" ]; then
    echo "runtime-packages.sh: no Debian package owns $lib" >&2
    exit 1
  fi
  packages="$packages ${owner%%:*}"
done
printf '%s\n' $packages | sort -u
