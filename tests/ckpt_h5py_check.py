#!/usr/bin/env python3
"""h5py reads a checkpoint by its documented layout (docs/checkpoint-format.md) and agrees with
`switchyard ckpt inspect --dump NAME`: a replicated tensor as one dataset in its global shape, a
split one reassembled from its pieces, every piece's CRC32C recomputed here independently.

Usage: ckpt_h5py_check.py SWITCHYARD CKPT_RANKS_TEST MPIRUN [MPIRUN_ARGS...]
"""
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np


def crc32c(data: bytes) -> int:
    # Bitwise CRC32C (reflected Castagnoli polynomial), written from the definition.
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def dump(switchyard, step_dir, name):
    out = subprocess.run([switchyard, "ckpt", "inspect", step_dir, "--dump", name],
                         check=True, capture_output=True, text=True).stdout
    return np.array([float(x) for x in out.split()])


def main():
    switchyard, ranks_test, mpirun = sys.argv[1], sys.argv[2], sys.argv[3:]
    assert crc32c(b"123456789") == 0xE3069283
    with tempfile.TemporaryDirectory() as out_dir:
        subprocess.run(mpirun + ["-np", "2", ranks_test, "save", out_dir, "4"], check=True)
        step_dir = os.path.join(out_dir, "checkpoints", "step_00000004")
        with open(os.path.join(out_dir, "checkpoints", "latest")) as f:
            assert f.read().strip() == "step_00000004"
        with open(os.path.join(step_dir, "manifest.json")) as f:
            manifest = json.load(f)
        assert manifest["world_size"] == 2 and manifest["step"] == 4
        for t in manifest["tensors"]:
            shape = tuple(t["shape"])
            parts = []
            for p in sorted(t["pieces"], key=lambda p: p["offset"]):
                with h5py.File(os.path.join(step_dir, p["file"]), "r") as h5:
                    ds = h5[p["dataset"]]
                    whole = p["offset"] == 0 and p["count"] == int(np.prod(shape))
                    # A whole tensor is stored under its own name in its global shape.
                    if whole:
                        assert p["dataset"] == t["name"] and ds.shape == shape, (p, ds.shape)
                    else:
                        assert p["dataset"] == f'{t["name"]}@{p["offset"]}' and ds.shape == (p["count"],)
                    data = ds[()]
                assert str(data.dtype) == t["dtype"], (data.dtype, t["dtype"])
                le = data.astype(data.dtype.newbyteorder("<")).tobytes()
                assert crc32c(le) == p["crc32c"], f'{t["name"]}: CRC32C differs in {p["file"]}'
                parts.append(data.reshape(-1))
            value = np.concatenate(parts).reshape(shape)
            printed = dump(switchyard, step_dir, t["name"])
            if not np.array_equal(value.reshape(-1).astype(np.float64), printed):
                sys.exit(f'FAIL: {t["name"]}: h5py {value.reshape(-1)} vs ckpt inspect --dump {printed}')
            print(f'{t["name"]} {t["dtype"]} {list(shape)}: {len(t["pieces"])} piece(s), equal')
    print("PASS")


if __name__ == "__main__":
    main()
