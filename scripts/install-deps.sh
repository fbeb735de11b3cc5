#!/usr/bin/env bash
# Installs the Debian packages Switchyard needs, only those missing.
# As root it runs apt-get; otherwise it prints the exact apt-get line and fails.
set -euo pipefail
# Build tools, libraries, the data corpus, and the PyTorch reference twin used by the tests.
# ocl-icd-opencl-dev: Debian's dnnl CMake config requires OpenCL (GPU runtime OCL) but only recommends it.
PKGS=(build-essential cmake pkg-config libdnnl-dev ocl-icd-opencl-dev libtomlplusplus-dev libcli11-dev
      libhdf5-dev libgtest-dev libopenmpi-dev openmpi-bin fortunes python3 python3-numpy python3-torch
      python3-h5py)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
line="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
  echo "switchyard: missing system packages; run as root: $line" >&2
  exit 2
fi
echo "switchyard: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
