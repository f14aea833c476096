#!/usr/bin/env bash
# Fails when any tracked C++/CUDA source is not clang-format clean (.clang-format).
# With --fix, rewrites the files in place instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=check
[[ ${1:-} == --fix ]] && mode=fix
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
    '*.cc' '*.h' '*.cu' '*.cuh' '*.cpp' '*.hpp' | while read -r f; do [[ -f $f ]] && echo "$f"; done)
else
  mapfile -t files < <(find kernels worker router services tests -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
fi
((${#files[@]})) || { echo "check-format: no sources"; exit 0; }
if [[ $mode == fix ]]; then
  clang-format -i "${files[@]}"
  echo "check-format: formatted ${#files[@]} files"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "check-format: not clang-format clean (run scripts/check-format.sh --fix):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check-format: ${#files[@]} files clean"
