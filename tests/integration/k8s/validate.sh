#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (k8s/): renders the base and every overlay
# with a real kustomize (`kubectl kustomize`; Debian 12's kubernetes-client, kubectl 1.20 /
# kustomize v2.0.3, or any newer one) and checks each rendered object with validate.js:
# Kubernetes API schemas (npm kubernetes-models, pinned in package-lock.json), strict field
# names, object kinds and counts, pool sizes, probes, resources, securityContext, and every
# cpserve flag against `cpserve ROLE --help`.
#
# usage: validate.sh CPSERVE_BINARY SOURCE_DIR WORK_DIR
#   KUBECTL  kubectl to use (default: kubectl on PATH)
set -euo pipefail

if (($# != 3)); then
  echo "usage: $0 CPSERVE_BINARY SOURCE_DIR WORK_DIR" >&2
  exit 2
fi
cpserve=$1
src=$2
work=$3
here=$src/tests/integration/k8s
kubectl=${KUBECTL:-kubectl}

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "validate.sh: '$1' not found: $2 (scripts/install-deps.sh installs it)" >&2
    exit 1
  fi
}
need "$kubectl" "Debian package kubernetes-client"
need node "Debian package nodejs"
need npm "Debian package npm"
if [[ ! -x $cpserve ]]; then
  echo "validate.sh: no cpserve binary at $cpserve (build the cpserve target)" >&2
  exit 1
fi

# The npm packages go to the build tree; reinstalled only when the lock file changes.
mkdir -p "$work/npm"
if ! cmp -s "$here/package-lock.json" "$work/npm/.installed-lock.json" ||
  [[ ! -d $work/npm/node_modules ]]; then
  cp "$here/package.json" "$here/package-lock.json" "$work/npm/"
  flags=(--no-audit --no-fund --ignore-scripts)
  (cd "$work/npm" && { npm ci --offline "${flags[@]}" || npm ci "${flags[@]}"; })
  cp "$here/package-lock.json" "$work/npm/.installed-lock.json"
fi
export NODE_PATH=$work/npm/node_modules

# Every overlay must be listed here with its expected pool sizes and GPUs.
kinds=ConfigMap=2,Deployment=1,PodDisruptionBudget=3,Service=3,ServiceAccount=1,StatefulSet=2
declare -A replicas=(
  [base]=cpserve-prefill=1,cpserve-decode=1
  [overlays/cpu-demo]=cpserve-prefill=2,cpserve-decode=2
  [overlays/gpu]=cpserve-prefill=4,cpserve-decode=4
)
declare -A gpus=([base]=0 [overlays/cpu-demo]=0 [overlays/gpu]=8)

status=0
for dir in "$src"/k8s/overlays/*/; do
  name=overlays/$(basename "$dir")
  if [[ -z ${replicas[$name]:-} ]]; then
    echo "FAIL k8s/$name has no expectations in $0" >&2
    status=1
  fi
done

"$kubectl" version --client 2>/dev/null | head -n 1 || true
for name in base overlays/cpu-demo overlays/gpu; do
  out=$work/$(basename "$name").yaml
  echo "== k8s/$name"
  if ! "$kubectl" kustomize "$src/k8s/$name" >"$out"; then
    echo "FAIL kubectl kustomize k8s/$name" >&2
    status=1
    continue
  fi
  node "$here/validate.js" --cpserve "$cpserve" --entrypoint "$src/k8s/cpserve-k8s-entrypoint" \
    --kinds "$kinds" --replicas "${replicas[$name]}" --gpus "${gpus[$name]}" "$out" || status=1
done
exit $status
