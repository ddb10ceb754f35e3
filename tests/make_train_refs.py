#!/usr/bin/env python3
"""Writes tests/ref/train_step_minilm.bin.gz: one training step's loss and gradients for each
task of the task model (lib/taskmodel.h) on the default model, from transformers' BertModel
plus the heads written out in torch, for tests/unit/test_train_parity.c. Run by developers
(needs torch + transformers), not by CI.

    python3 tests/make_train_refs.py [--model models/all-MiniLM-L6-v2]

Model: sentence model mean (mean of the last hidden states over real tokens), pair model
ensemble (so every head has a gradient), dropout off, fp32, eager attention. Head weights are
nn.Linear's default init under torch.manual_seed(0), stored in the file. One real batch per
task from data/ (SST 4 sentences, QQP 4 pairs, STS 4 pairs), token ids and types from the
Hugging Face tokenizer, stored PACKED in the C layout: sst sentences; pairs: the 4 a's, the
4 b's, the 4 joint [CLS] a [SEP] b [SEP] sequences. Per task:
  sst  cross-entropy(sst(e), y)                                      (mean)
  qqp  BCE-with-logits((qqp_bi([u;v;|u-v|]) + qqp_cross(c)) / 2, y)   (mean)
  sts  MSE((2.5 (1 + cos(u, v)) + sts_cross(c)) / 2, y)               (mean)
and the gradient of that task's loss w.r.t. every encoder tensor (not the pooler: unused) and
every head tensor. Encoder tensors of more than 4096 elements are stored as 256 samples (the
word embeddings: rows of the batch's words plus a few absent rows, whose gradient is 0) with
the L2 norm and max |g|; everything else whole.

Format (little-endian, gzip): "MTTRAIN1", u32 C, u32 n_heads; per head tensor: u32 name length,
name, u32 numel, f32 values[numel]; u32 n_tasks; per task: u32 task (0 sst, 1 qqp, 2 sts),
u32 B, u32 nseq, u32 N, i32 offsets[nseq+1], i32 ids[N], i32 types[N], f32 labels[B],
f64 loss, u32 n_grads, per gradient: u32 name length, name, u32 numel, f64 norm, f32 max_abs,
u32 nsample (= numel: whole, no indices), u32 idx[nsample] (only when sampled), f32 g[nsample].
"""
import argparse, os, random, struct, sys

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BertModel, BertTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reflib import ROOT, grad_record, read_tsv, write_gz  # noqa: E402

B = 4


def encode(tok, texts):
    """Padded tensors of a list of 1- or 2-text examples, and their packed ids/types."""
    encs = [tok(*t, truncation=True, max_length=64) for t in texts]
    T = max(len(e["input_ids"]) for e in encs)
    ids = torch.zeros(len(encs), T, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for b, e in enumerate(encs):
        L = len(e["input_ids"])
        ids[b, :L] = torch.tensor(e["input_ids"])
        types[b, :L] = torch.tensor(e["token_type_ids"])
        mask[b, :L] = 1
    return (ids, types, mask), [e["input_ids"] for e in encs], [e["token_type_ids"] for e in encs]


def run(model, enc):
    ids, types, mask = enc
    return model(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state, mask


def mean_pool(h, mask):
    m = mask[..., None].float()
    return (h * m).sum(1) / m.sum(1)


def task_loss(task, model, heads, tok, rows):
    """Loss, packed sequences (C layout) and labels of one task batch."""
    y = torch.tensor([float(r[-1]) for r in rows])
    if task == 0:
        enc, pids, ptypes = encode(tok, [[r[0]] for r in rows])
        h, mask = run(model, enc)
        loss = F.cross_entropy(heads["sst"](mean_pool(h, mask)), y.long())
        return loss, pids, ptypes, y
    ea, ia, ta = encode(tok, [[r[0]] for r in rows])
    eb, ib, tb = encode(tok, [[r[1]] for r in rows])
    eab, iab, tab = encode(tok, [[r[0], r[1]] for r in rows])
    u, v = mean_pool(*run(model, ea)), mean_pool(*run(model, eb))
    c = run(model, eab)[0][:, 0]
    if task == 1:
        z = (heads["qqp_bi"](torch.cat([u, v, (u - v).abs()], 1)) + heads["qqp_cross"](c)) / 2
        loss = F.binary_cross_entropy_with_logits(z[:, 0], y)
    else:
        s = (2.5 * (1 + F.cosine_similarity(u, v)) + heads["sts_cross"](c)[:, 0]) / 2
        loss = F.mse_loss(s, y)
    return loss, ia + ib + iab, ta + tb + tab, y


def grad_records(named, packed_ids, C, sample_rng):
    buf = bytearray(struct.pack("<I", len(named)))
    for name, p in named:
        buf += grad_record(name, p, packed_ids, C, sample_rng)
    return buf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models/all-MiniLM-L6-v2"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/ref/train_step_minilm.bin.gz"))
    args = ap.parse_args()
    rng = random.Random(2024)
    torch.manual_seed(0)
    tok = BertTokenizer(os.path.join(args.model, "vocab.txt"), do_lower_case=True)
    model = BertModel.from_pretrained(args.model, torch_dtype=torch.float32, attn_implementation="eager",
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.train()
    C = model.config.hidden_size
    heads = {"sst": torch.nn.Linear(C, 5), "qqp_bi": torch.nn.Linear(3 * C, 1),
             "qqp_cross": torch.nn.Linear(C, 1), "sts_cross": torch.nn.Linear(C, 1)}
    buf = bytearray(b"MTTRAIN1" + struct.pack("<II", C, 2 * len(heads)))
    for hname, lin in heads.items():
        for pname, p in (("weight", lin.weight), ("bias", lin.bias)):
            name = f"{hname}.{pname}"
            buf += struct.pack("<I", len(name)) + name.encode() + struct.pack("<I", p.numel())
            buf += p.detach().numpy().astype("<f4").ravel().tobytes()
    batches = [read_tsv("sst-train.tsv", ["sentence", "label"], B, rng),
               read_tsv("qqp-train.tsv", ["sentence1", "sentence2", "is_duplicate"], B, rng),
               read_tsv("sts-train.tsv", ["sentence1", "sentence2", "similarity"], B, rng)]
    buf += struct.pack("<I", 3)
    sample_rng = np.random.RandomState(7)
    for task, rows in enumerate(batches):
        model.zero_grad(set_to_none=True)
        for lin in heads.values():
            lin.zero_grad(set_to_none=True)
        loss, pids, ptypes, y = task_loss(task, model, heads, tok, rows)
        loss.backward()
        offsets = np.cumsum([0] + [len(s) for s in pids]).astype("<i4")
        packed_ids = np.concatenate([np.array(s) for s in pids]).astype("<i4")
        packed_types = np.concatenate([np.array(s) for s in ptypes]).astype("<i4")
        buf += struct.pack("<IIII", task, B, len(pids), int(offsets[-1]))
        buf += offsets.tobytes() + packed_ids.tobytes() + packed_types.tobytes() + y.numpy().astype("<f4").tobytes()
        buf += struct.pack("<d", loss.item())
        named = [(n, p) for n, p in model.named_parameters() if not n.startswith("pooler.")]
        named += [(f"{h}.{pn}", getattr(lin, pn)) for h, lin in heads.items() for pn in ("weight", "bias")]
        buf += grad_records(named, packed_ids, C, sample_rng)
        print(f"task {task}: N={offsets[-1]} loss={loss.item():.6f}", file=sys.stderr)
    write_gz(args.out, buf)
    print(f"{args.out}: {len(buf)} bytes raw, {os.path.getsize(args.out)} compressed", file=sys.stderr)


if __name__ == "__main__":
    main()
