"""reflib.py — writes the small named-tensor reference files the C parity tests read
(tests/unit/refs.h): gzip text, per tensor one line "name d0 d1 ..." and one line of
values ("%.17g", row-major). Deterministic bytes (gzip mtime 0)."""
import gzip
import io

import numpy as np


def write_refs(path, tensors):
    buf = io.StringIO()
    for name, value in tensors.items():
        a = np.asarray(value, dtype=np.float64)
        dims = a.shape if a.ndim else (1,)
        buf.write(name + " " + " ".join(str(d) for d in dims) + "\n")
        buf.write(" ".join("%.17g" % v for v in a.ravel()) + "\n")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue().encode())
