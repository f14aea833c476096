#!/usr/bin/env bash
# Installs the Debian 12 packages that cpserve's build, demo and tests need.
# Idempotent: when every package is present it installs nothing and exits 0.
# The CUDA toolkit is detected (nvcc on PATH or /usr/local/cuda), never installed.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config ccache git clang-format
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgoogle-glog-dev libgflags-dev
  libucx-dev ucx-utils libgloo-dev
  libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev
  prometheus-cpp-dev libre2-dev libpcre2-dev libopenblas-dev libicu-dev
  nlohmann-json3-dev python3
  # Offline validation of the Kubernetes manifests (tests/integration/k8s): kubectl with its
  # built-in kustomize, node and npm. Each only where the command is missing: another
  # package may already provide it (a kubectl from the Google Cloud SDK owns
  # /usr/bin/kubectl; NodeSource's nodejs bundles npm and conflicts with Debian's npm).
  $(command -v kubectl >/dev/null 2>&1 || echo kubernetes-client)
  $(command -v node >/dev/null 2>&1 || echo nodejs)
  $(command -v npm >/dev/null 2>&1 || echo npm)
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PKGS[@]} packages present"
fi

if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "install-deps: CUDA toolkit found ($( (command -v nvcc || echo /usr/local/cuda/bin/nvcc) ))"
else
  echo "install-deps: no CUDA toolkit; building the CPU backend only"
fi
