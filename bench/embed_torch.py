#!/usr/bin/env python3
"""PyTorch side of bench/embed.sh: sentences/s of mean-pooled embeddings with
transformers (eval, no grad) or sentence-transformers .encode, on the same sentences,
same thread count. Prints one line: "<impl> batch=<B> n=<N> seconds=<s> sent_per_s=<r>".
Developer tool: needs pip torch + transformers (+ sentence-transformers); CI never runs it.
"""
import argparse, time, sys

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--sentences", required=True, help="text file, one sentence per line")
    ap.add_argument("--impl", choices=["transformers", "sentence-transformers"], required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write embeddings as .npy (for a parity spot check)")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    sents = [l.rstrip("\n") for l in open(a.sentences, encoding="utf-8")]
    if a.impl == "transformers":
        from transformers import AutoModel, AutoTokenizer
        tok = AutoTokenizer.from_pretrained(a.model)
        model = AutoModel.from_pretrained(a.model).eval()
        def encode(batch):
            enc = tok(batch, padding=True, truncation=True, max_length=512, return_tensors="pt")
            out = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            return (out * m).sum(1) / m.sum(1)
        t0 = time.perf_counter()
        embs = []
        with torch.inference_mode():
            for i in range(0, len(sents), a.batch):
                embs.append(encode(sents[i:i + a.batch]))
        dt = time.perf_counter() - t0
        embs = torch.cat(embs).numpy()
    else:
        from sentence_transformers import SentenceTransformer, models
        word = models.Transformer(a.model, max_seq_length=512)
        pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
        st = SentenceTransformer(modules=[word, pool], device="cpu")
        t0 = time.perf_counter()
        embs = st.encode(sents, batch_size=a.batch, convert_to_numpy=True, show_progress_bar=False)
        dt = time.perf_counter() - t0
    if a.out:
        import numpy as np
        np.save(a.out, embs)
    print(f"{a.impl} batch={a.batch} n={len(sents)} seconds={dt:.3f} sent_per_s={len(sents)/dt:.1f}")

if __name__ == "__main__":
    sys.exit(main())
