#!/usr/bin/env python3
"""PyTorch's side of tests/gpu/check.sh, on the same GPU, same model, same batches.

  torch_bench.py encoder --model DIR --batch B --len L --steps S
      median ms of an inference forward (mean-pooled output copied to the host) and of a
      training step (forward, loss 1e-3 * sum(h^2), backward, fused AdamW lr 1e-4), bf16
      autocast, dropout 0.1, the ids of tests/gpu/train_check.c; prints "torch mode=... ms=..."
  torch_bench.py embed --model DIR --sentences FILE --batch B
      sentence-transformers encode (mean pooling, sorted by length as it does) under bf16
      autocast; prints "torch embed n=... seconds=... sent_per_s=..." and writes --out .npy
  torch_bench.py make-base --out DIR --vocab FILE
      a randomly initialised BERT-base (seed 0) saved as DIR (fp32 safetensors), for
      throughput at BERT-base shapes without carrying 440 MB of weights
Offline (the GPU machine has no network): everything loads from local directories.
"""
import argparse, os, sys, time


def ids_like_train_check(B, L):
    import torch
    n = B * L
    ids = [1000 + ((i * 7919 + 7 * 104729) % 20000) for i in range(n)]
    ids = torch.tensor(ids, dtype=torch.long).view(B, L)
    ids[:, 0], ids[:, -1] = 101, 102
    return ids


def median_ms(fn, steps, warmup=3):
    import torch
    times = []
    for s in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if s >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def encoder(a):
    import torch
    from transformers import BertModel
    torch.backends.cuda.matmul.allow_tf32 = False
    m = BertModel.from_pretrained(a.model, dtype=torch.float32, hidden_dropout_prob=0.1,
                                  attention_probs_dropout_prob=0.1, add_pooling_layer=False).cuda()
    ids = ids_like_train_check(a.batch, a.len).cuda()
    mask = torch.ones_like(ids)

    def forward():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            h = m(input_ids=ids, attention_mask=mask).last_hidden_state
            h.float().mean(1).cpu()

    m.eval()
    fwd = median_ms(forward, a.steps)
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01, fused=True)

    def train():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = m(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = (h.float() ** 2).sum() * 1e-3
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    trn = median_ms(train, a.steps)
    attn = getattr(m.config, "_attn_implementation", "?")
    for mode, ms in (("forward", fwd), ("train", trn)):
        print(f"torch mode={mode} precision=bf16-autocast attn={attn} B={a.batch} L={a.len} ms={ms:.3f} "
              f"tokens_per_s={a.batch * a.len / (ms * 1e-3):.0f}")


def embed(a):
    import numpy as np, torch
    from sentence_transformers import SentenceTransformer, models
    sents = [l.rstrip("\n") for l in open(a.sentences, encoding="utf-8")]
    word = models.Transformer(a.model, max_seq_length=512)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[word, pool], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        st.encode(sents[:2048], batch_size=a.batch, show_progress_bar=False)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        embs = st.encode(sents, batch_size=a.batch, convert_to_numpy=True, show_progress_bar=False)
        dt = time.perf_counter() - t0
    if a.out:
        np.save(a.out, embs.astype(np.float32))
    print(f"torch embed n={len(sents)} batch={a.batch} seconds={dt:.3f} sent_per_s={len(sents) / dt:.1f}")


def make_base(a):
    import shutil, torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    m = BertModel(BertConfig())  # bert-base-uncased's shapes: 12 layers, 768 wide, 30522 words
    m.save_pretrained(a.out, safe_serialization=True)
    shutil.copy(a.vocab, os.path.join(a.out, "vocab.txt"))
    print(f"random BERT-base written to {a.out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["encoder", "embed", "make-base"])
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sentences")
    ap.add_argument("--out")
    ap.add_argument("--vocab")
    a = ap.parse_args()
    {"encoder": encoder, "embed": embed, "make-base": make_base}[a.what](a)


if __name__ == "__main__":
    sys.exit(main())
