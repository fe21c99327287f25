#!/usr/bin/env python3
"""A starting corpus for the `burst` fuzz target from classic pcap files.

    fuzz/seeds.py OUT_DIR SELECTOR FILE.pcap...

Each capture becomes inputs of about 120 frames (the target's format: a selector byte,
then bursts of `[size, clock step]` and frames `[len (u16 LE)] bytes`). SELECTOR picks
the pipeline and variant (see fuzz_targets/burst.rs: 4 * pipeline index + variant).
Standard library only."""
import os
import random
import struct
import sys


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        return []  # pcapng and others: not needed for seeds
    out, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(end + "IIII", data[off : off + 16])
        off += 16
        out.append(data[off : off + incl])
        off += incl
    return out


def main():
    out_dir, sel, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(7)
    for path in files:
        fs = frames(path)
        for start in range(0, min(len(fs), 1200), 120):
            chunk = fs[start : start + 120]
            buf = bytearray([sel])
            i = 0
            while i < len(chunk):
                n = rng.randint(1, 40)
                part = chunk[i : i + n]
                buf += bytes([n - 1, rng.choice([0, 0, 1, 10, 255])])
                for f in part:
                    buf += struct.pack("<H", len(f)) + f
                i += n
            name = f"{os.path.basename(path)}-{sel}-{start}"
            with open(os.path.join(out_dir, name), "wb") as o:
                o.write(buf)


if __name__ == "__main__":
    main()
