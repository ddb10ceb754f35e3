#!/usr/bin/env python3
"""Sentences/s of Hugging Face's fast BertTokenizer (Rust, one thread) on a one-column TSV.

usage: RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
       python3 bench/tokenize_hf.py MODEL_DIR SENTENCES.tsv [RUNS]
Prints "NAME <sentences> <tokens> <best seconds> <sentences/s>" for the fastest of RUNS runs:
  hf-fast      encode_batch_fast (its fastest path: no per-sentence Python call, no offsets)
  hf-fast-e2e  the same plus reading the TSV file, as bin/tokenize does
  hf-batch     encode_batch (with offsets), the call most code uses
"""
import os
import sys
import time

assert os.environ.get("RAYON_NUM_THREADS") == "1", "set RAYON_NUM_THREADS=1"
from transformers import BertTokenizer  # noqa: E402  (after the thread settings)


def read_sentences(path):
    with open(path, encoding="utf-8") as f:
        next(f)
        return [line.rstrip("\n") for line in f]


def main():
    model, path = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    backend = BertTokenizer.from_pretrained(model).backend_tokenizer
    backend.enable_truncation(512)
    best_core = best_e2e = best_batch = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        sentences = read_sentences(path)
        t1 = time.perf_counter()
        encs = backend.encode_batch_fast(sentences)
        t2 = time.perf_counter()
        best_core = min(best_core, t2 - t1)
        best_e2e = min(best_e2e, t2 - t0)
        t3 = time.perf_counter()
        backend.encode_batch(sentences)
        best_batch = min(best_batch, time.perf_counter() - t3)
    tokens = sum(len(e.ids) for e in encs)
    n = len(sentences)
    print(f"hf-fast {n} {tokens} {best_core:.4f} {n / best_core:.0f}")
    print(f"hf-fast-e2e {n} {tokens} {best_e2e:.4f} {n / best_e2e:.0f}")
    print(f"hf-batch {n} {tokens} {best_batch:.4f} {n / best_batch:.0f}")


if __name__ == "__main__":
    main()
