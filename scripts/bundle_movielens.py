#!/usr/bin/env python3
"""Copies MovieLens-small with its MiniLM item embeddings into examples/movielens-small.

The embeddings are stored as float16 NPY (half the size; pinnersage reads f2 and converts to
f32), everything else byte for byte. Standard library only.

    python3 scripts/bundle_movielens.py SOURCE_DIR [--out examples/movielens-small]
"""
import argparse
import ast
import shutil
import struct
from pathlib import Path

COPIED = ["ratings.csv", "movies.csv", "README.txt", "item_emb_movieIds.txt"]
EMBEDDINGS = "item_emb_minilm_l6_v2.npy"


def read_f32_npy(path):
    data = path.read_bytes()
    assert data[:6] == b"\x93NUMPY", f"{path}: not an NPY file"
    major = data[6]
    if major == 1:
        hlen, start = struct.unpack("<H", data[8:10])[0], 10
    else:
        hlen, start = struct.unpack("<I", data[8:12])[0], 12
    header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
    assert header["descr"] == "<f4" and not header["fortran_order"], header
    rows, cols = header["shape"]
    body = data[start + hlen:]
    return rows, cols, struct.unpack(f"<{rows * cols}f", body[: rows * cols * 4])


def write_f16_npy(path, rows, cols, values):
    header = f"{{'descr': '<f2', 'fortran_order': False, 'shape': ({rows}, {cols}), }}"
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(struct.pack(f"<{len(values)}e", *values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, default=Path("examples/movielens-small"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copyfile(args.source / name, args.out / name)
    rows, cols, values = read_f32_npy(args.source / EMBEDDINGS)
    write_f16_npy(args.out / EMBEDDINGS, rows, cols, values)
    print(f"wrote {args.out}: {rows} x {cols} embeddings as float16 and {', '.join(COPIED)}")


if __name__ == "__main__":
    main()
