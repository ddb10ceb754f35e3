"""reflib.py — what the tests/make_*_refs.py scripts share: the small named-tensor reference
files the C parity tests read (tests/unit/refs.h: gzip text, per tensor one line "name d0 d1
..." and one line of values, "%.17g", row-major), deterministic gzip bytes (mtime 0, no file
name), seeded TSV samples of data/, and the sampled gradient records of the binary refs.
Needs numpy only; the scripts that import it bring torch."""
import csv
import gzip
import io
import os
import struct

import numpy as np


def write_refs(path, tensors):
    buf = io.StringIO()
    for name, value in tensors.items():
        a = np.asarray(value, dtype=np.float64)
        dims = a.shape if a.ndim else (1,)
        buf.write(name + " " + " ".join(str(d) for d in dims) + "\n")
        buf.write(" ".join("%.17g" % v for v in a.ravel()) + "\n")
    write_gz(path, buf.getvalue().encode())


def write_gz(path, data, name=""):
    """data gzip-compressed into path, the same bytes every run (mtime 0; name: header file name)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename=name) as gz:
        gz.write(bytes(data))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_tsv(name, cols, n, rng):
    """The first n rows of data/NAME after rng.shuffle, as tuples of the columns cols."""
    with open(os.path.join(ROOT, "data", name), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rng.shuffle(rows)
    return [tuple(r[c] for c in cols) for r in rows[:n]]


def grad_record(name, p, packed_ids, C, sample_rng):
    """One parameter's gradient record: name, size, norm and max |g|, then every value (up to
    4,096) or 256 sampled ones with their indices (the word embeddings: 240 rows the batch used,
    16 it did not). A parameter without a gradient records zeros."""
    g = p.grad.detach().numpy() if p.grad is not None else np.zeros(tuple(p.shape))
    g = g.astype(np.float32).ravel()
    buf = bytearray(struct.pack("<I", len(name)) + name.encode() + struct.pack("<I", g.size))
    buf += struct.pack("<df", float(np.linalg.norm(g.astype(np.float64))), float(np.abs(g).max()))
    if g.size <= 4096:
        return buf + struct.pack("<I", g.size) + g.astype("<f4").tobytes()
    if name == "embeddings.word_embeddings.weight":
        used = np.unique(packed_ids)
        unused = np.setdiff1d(np.arange(p.shape[0]), used)
        rows = np.concatenate([sample_rng.choice(used, 240), sample_rng.choice(unused, 16)])
        idx = rows * C + sample_rng.randint(0, C, rows.size)
    else:
        idx = np.sort(sample_rng.choice(g.size, 256, replace=False))
    return buf + struct.pack("<I", idx.size) + idx.astype("<u4").tobytes() + g[idx].astype("<f4").tobytes()
