#!/usr/bin/env python3
"""Writes tests/ref/encoder_minilm.bin.gz: reference outputs of transformers' BertModel
(eval mode, fp32) for the default model on real sentences from data/, for
tests/unit/test_bert_parity.c. Run by developers (needs torch + transformers), not by CI.

    python3 tests/make_encoder_refs.py [--model models/all-MiniLM-L6-v2]

Token ids come from the Hugging Face tokenizer and are stored in the file, so the C test
does not depend on our tokenizer. To stay small (< 2 MB) the file keeps, per sentence,
the hidden state at a few positions ([CLS], one inside, the last [SEP]; every position for
the first few sentences), the mean over all tokens, and the pooler output.

Format (little-endian, gzip): "MTREF1\\0\\0", u32 count, u32 hidden, u32 has_pooler; then per
sentence: u32 length L, u32 kind (0 single, 1 joint pair), i32 ids[L], i32 types[L],
u32 npos, i32 positions[npos], f32 rows[npos][hidden], f32 mean[hidden],
f32 pooled[hidden] when has_pooler.
"""
import argparse, os, random, struct, sys

import numpy as np
import torch
from transformers import BertModel, BertTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reflib import ROOT, read_tsv, write_gz  # noqa: E402

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models/all-MiniLM-L6-v2"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/ref/encoder_minilm.bin.gz"))
    ap.add_argument("--max-len", type=int, default=128)
    args = ap.parse_args()
    rng = random.Random(1234)
    torch.manual_seed(0)
    tok = BertTokenizer(os.path.join(args.model, "vocab.txt"), do_lower_case=True)
    model = BertModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    has_pooler = model.pooler is not None
    H = model.config.hidden_size

    items = [((s,), 0) for (s,) in read_tsv("sst-train.tsv", ["sentence"], 90, rng)]
    items += [((a,), 0) for (a,) in read_tsv("qqp-train.tsv", ["sentence1"], 30, rng)]
    items += [((a,), 0) for (a,) in read_tsv("nli-sick.tsv", ["premise"], 20, rng)]
    items += [(p, 1) for p in read_tsv("sts-train.tsv", ["sentence1", "sentence2"], 50, rng)]
    items += [(p, 1) for p in read_tsv("qqp-train.tsv", ["sentence1", "sentence2"], 50, rng)]
    rng.shuffle(items)

    out = bytearray(b"MTREF1\0\0" + struct.pack("<III", len(items), H, int(has_pooler)))
    with torch.no_grad():
        for i, (texts, kind) in enumerate(items):
            enc = tok(*texts, truncation=True, max_length=args.max_len, return_tensors="pt")
            o = model(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                      attention_mask=enc["attention_mask"])
            hid = o.last_hidden_state[0].numpy().astype(np.float32)
            L = hid.shape[0]
            pos = list(range(L)) if i < 4 else sorted({0, rng.randrange(1, L - 1) if L > 2 else 0, L - 1})
            out += struct.pack("<II", L, kind)
            out += enc["input_ids"][0].numpy().astype("<i4").tobytes()
            out += enc["token_type_ids"][0].numpy().astype("<i4").tobytes()
            out += struct.pack("<I", len(pos)) + np.array(pos, dtype="<i4").tobytes()
            out += hid[pos].astype("<f4").tobytes()
            out += hid.mean(axis=0).astype("<f4").tobytes()
            if has_pooler:
                out += o.pooler_output[0].numpy().astype("<f4").tobytes()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_gz(args.out, out, name=os.path.basename(args.out)[:-3])  # the header name it always had
    print(f"{args.out}: {len(items)} sentences, {len(out)} bytes raw, "
          f"{os.path.getsize(args.out)} compressed, pooler={has_pooler}", file=sys.stderr)


if __name__ == "__main__":
    main()
