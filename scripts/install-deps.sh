#!/usr/bin/env bash
# Installs the Debian packages Switchyard needs, only those missing.
# As root it runs apt-get; otherwise it prints the exact apt-get line and fails.
set -euo pipefail
# Build tools, libraries, the data corpus, and the PyTorch reference twin used by the tests.
# ocl-icd-opencl-dev: Debian's dnnl CMake config requires OpenCL (GPU runtime OCL) but only recommends it.
PKGS=(build-essential cmake pkg-config libdnnl-dev ocl-icd-opencl-dev libtomlplusplus-dev libcli11-dev
      libhdf5-dev libgtest-dev libopenmpi-dev openmpi-bin fortunes python3 python3-numpy python3-torch
      python3-h5py)
# cuDNN's fused attention (docs/cuda.md) needs the header-only cudnn-frontend beside cuDNN. Only
# where cuDNN is installed (GPU machines; CUDA and cuDNN themselves come from NVIDIA, not from
# here): PyPI's wheel without its Python dependencies (about 11 MB; the headers need none), pinned to
# the version the wrapper was built against, binary only. A failure only leaves the fused path off.
FRONTEND=nvidia-cudnn-frontend==1.32.0
need_frontend=0
if [ -e "${CUDA_HOME:-/usr/local/cuda}/include/cudnn.h" ] &&
   ! python3 -c "import importlib.metadata as m; m.distribution('nvidia-cudnn-frontend')" 2>/dev/null; then
  need_frontend=1
  PKGS+=(python3-pip)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
pip_line="python3 -m pip install --break-system-packages --no-deps --only-binary=:all: $FRONTEND"
if [ "$(id -u)" != 0 ]; then
  [ $need_frontend = 1 ] && echo "switchyard: cuDNN's frontend headers missing; as root: $pip_line" >&2
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "switchyard: missing system packages; run as root: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 2
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "switchyard: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ $need_frontend = 1 ]; then
  echo "switchyard: installing $FRONTEND (headers for cuDNN's fused attention)"
  $pip_line -q || echo "switchyard: warning: $FRONTEND did not install; the build keeps the simple attention kernels" >&2
fi
