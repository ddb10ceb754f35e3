#!/usr/bin/env python3
"""Write the reference token ids that tests/bats/tokenize_parity.bats compares bin/tokenize with.

Developer-run only (needs transformers + tokenizers); CI reads the committed files.

For every TSV in data/ and tests/data/hard-cases.tsv it encodes every sentence with both
Hugging Face tokenizers built from the same vocab.txt:
  - BertTokenizerLegacy: the pure-Python ("slow") BertTokenizer of transformers < 5;
  - BertTokenizer: the Rust `tokenizers`-backed one (transformers 5 calls it BertTokenizer,
    BertTokenizerFast is an alias).
It checks that both agree and reports every disagreement. The reference is the Rust tokenizer
itself (BertTokenizer's backend_tokenizer, truncation longest_first), the implementation
transformers 5 gives users as BertTokenizer. Known disagreements, all reported:
  - slow lower-cases with Python's str.lower(), which maps a word-final capital sigma to
    final sigma (ς); Rust lower-cases character by character (σ);
  - longest_first with an odd budget and both sequences cut: slow gives the odd token to
    the first sequence, Rust to the longer one (the second on a tie);
  - the transformers 5 Python wrapper treats an empty second text as no pair at all
    ([CLS] a [SEP]); the Rust core, slow and bin/tokenize give [CLS] a [SEP] [SEP].

Output: tests/ref/tokenizer/<name>.tsv.gz, one line per (row, tensor):
    id <TAB> tensor <TAB> max_len <TAB> space-separated ids
tensor is ids_a / ids_b / ids_ab / types_ab as tokenize writes them. Every row is encoded with
max_len 512; the first TRUNC_ROWS rows of each file are also encoded with a small max_len to
exercise truncation (longest_first for pairs).

usage: python3 tests/make_tokenizer_refs.py [--model models/all-MiniLM-L6-v2]
"""
import argparse
import csv
import gzip
import os
import sys

from transformers import BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (file, id column, text columns); a pair file gets ids_b, ids_ab and types_ab too.
FILES = [
    ("data/sst-train.tsv", "id", ["sentence"]),
    ("data/qqp-train.tsv", "id", ["sentence1", "sentence2"]),
    ("data/sts-train.tsv", "id", ["sentence1", "sentence2"]),
    ("data/nli-sick.tsv", "id", ["premise", "hypothesis"]),
    ("tests/data/hard-cases.tsv", "id", ["text_a", "text_b"]),
]
FULL_LEN = 512
TRUNC_LEN = 24     # small enough that many pairs need longest_first truncation
TRUNC_ROWS = 2000


def read_rows(path):
    # The TSVs have no quoting: split on tabs exactly as the C reader does.
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def encode_rust(backend, a, b, max_len):
    backend.enable_truncation(max_len, strategy="longest_first")
    enc = backend.encode(a, b) if b is not None else backend.encode(a)
    return enc.ids, enc.type_ids


def encode(tok, a, b, max_len):
    enc = tok(a, b, truncation="longest_first" if b is not None else True, max_length=max_len,
              return_token_type_ids=True)
    return enc["input_ids"], enc.get("token_type_ids")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models/all-MiniLM-L6-v2"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/ref/tokenizer"))
    args = ap.parse_args()
    vocab = os.path.join(args.model, "vocab.txt")
    fast = BertTokenizer.from_pretrained(args.model, do_lower_case=True)
    slow = BertTokenizerLegacy(vocab, do_lower_case=True)
    assert fast.backend_tokenizer is not None, "BertTokenizer must be the Rust tokenizers one"
    os.makedirs(args.out, exist_ok=True)
    total_disagree = 0
    for rel, id_col, cols in FILES:
        rows = read_rows(os.path.join(ROOT, rel))
        name = os.path.basename(rel).replace(".tsv", "")
        out_path = os.path.join(args.out, name + ".tsv.gz")
        n_seq = n_disagree = n_wrapper = 0
        with gzip.open(out_path, "wt", encoding="utf-8", compresslevel=9) as out:
            for i, row in enumerate(rows):
                lens = [FULL_LEN] + ([TRUNC_LEN] if i < TRUNC_ROWS else [])
                for max_len in lens:
                    jobs = [("ids_a", row[cols[0]], None)]
                    if len(cols) == 2:
                        jobs += [("ids_b", row[cols[1]], None), ("ids_ab", row[cols[0]], row[cols[1]])]
                    for tensor, a, b in jobs:
                        ids_f, types_f = encode_rust(fast.backend_tokenizer, a, b, max_len)
                        ids_w, types_w = encode(fast, a, b, max_len)
                        if (ids_w, types_w if b is not None else None) != \
                                (ids_f, types_f if b is not None else None) and (a and b):
                            n_wrapper += 1
                            print(f"WRAPPER {rel} id={row[id_col]} {tensor} max_len={max_len}",
                                  file=sys.stderr)
                        ids_s, types_s = encode(slow, a, b, max_len)
                        n_seq += 1
                        if ids_f != ids_s or (b is not None and types_f != types_s):
                            n_disagree += 1
                            print(f"DISAGREE {rel} id={row[id_col]} {tensor} max_len={max_len}\n"
                                  f"  text  {a!r} {b!r}\n  fast  {fast.convert_ids_to_tokens(ids_f)}\n"
                                  f"  slow  {slow.convert_ids_to_tokens(ids_s)}", file=sys.stderr)
                        out.write(f"{row[id_col]}\t{tensor}\t{max_len}\t{' '.join(map(str, ids_f))}\n")
                        if b is not None:
                            out.write(f"{row[id_col]}\ttypes_ab\t{max_len}\t{' '.join(map(str, types_f))}\n")
        total_disagree += n_disagree
        print(f"{rel}: {len(rows)} rows, {n_seq} encodings, slow/fast disagreements: {n_disagree}"
              f", wrapper/core disagreements (non-empty texts): {n_wrapper}"
              f" -> {os.path.relpath(out_path, ROOT)} ({os.path.getsize(out_path)} bytes)")
    print(f"total slow/fast disagreements: {total_disagree}")


if __name__ == "__main__":
    main()
