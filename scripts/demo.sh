#!/usr/bin/env bash
# The README's demo. Until the serving path lands it shows the binary's help.
set -euo pipefail
build=${1:-build}
bin="$build/bin/cpserve"
"$bin" --help
