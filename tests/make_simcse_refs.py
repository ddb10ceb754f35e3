#!/usr/bin/env python3
"""make_simcse_refs.py — PyTorch references for the supervised SimCSE loss (lib/simcse.h).

Developer-run (needs torch); writes tests/ref/simcse/simcse.txt.gz, which CI reads. For each
case (in-batch negatives only / with hard negatives, one-way / symmetric, two temperatures):
the embeddings h, hp (positives), hn (hard negatives, when used), the loss and its gradients,
as "CASE.name". Computed in float64 from float32-representable inputs, as in the SimCSE
code: cosine similarities / tau fed to cross-entropy with targets arange(B); the symmetric
variant adds cross-entropy of the transposed anchor-positive block (positives as anchors,
no hard negatives) and halves the sum.

  python3 tests/make_simcse_refs.py
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from reflib import write_refs  # noqa: E402

B, D = 6, 10
OUT = os.path.join(os.path.dirname(__file__), "ref", "simcse")
CASES = [  # name, hard negatives, symmetric, tau
    ("inbatch", False, False, 0.05),
    ("hardneg", True, False, 0.05),
    ("symmetric", False, True, 0.05),
    ("symmetric_hardneg", True, True, 0.05),
    ("tau01_hardneg", True, False, 0.1),
]


def simcse_loss(h, hp, hn, tau, symmetric):
    # the SimCSE code's form: cosine_similarity with broadcasting
    cos = F.cosine_similarity(h.unsqueeze(1), hp.unsqueeze(0), dim=-1, eps=1e-12) / tau
    if hn is not None:
        cos = torch.cat([cos, F.cosine_similarity(h.unsqueeze(1), hn.unsqueeze(0), dim=-1, eps=1e-12) / tau], 1)
    target = torch.arange(len(h))
    loss = F.cross_entropy(cos, target)
    if symmetric:
        loss = (loss + F.cross_entropy(cos[:, : len(h)].t(), target)) / 2
    return loss


def normalized_form(h, hp, hn, tau, symmetric):  # the C code's form, as a cross-check
    u, up = F.normalize(h, dim=1), F.normalize(hp, dim=1)
    cands = up if hn is None else torch.cat([up, F.normalize(hn, dim=1)])
    S = u @ cands.t() / tau
    l = (torch.logsumexp(S, 1) - S.diagonal()).mean()
    if symmetric:
        St = S[:, : len(h)].t()
        l = (l + (torch.logsumexp(St, 1) - St.diagonal()).mean()) / 2
    return l


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    t = {}
    for name, neg, sym, tau in CASES:
        base = torch.randn(B, D, generator=gen)
        h = (base + 0.6 * torch.randn(B, D, generator=gen)).double().requires_grad_()
        hp = (base + 0.6 * torch.randn(B, D, generator=gen)).double().requires_grad_()
        hn = (base + 0.9 * torch.randn(B, D, generator=gen)).double().requires_grad_() if neg else None
        loss = simcse_loss(h, hp, hn, tau, sym)
        alt = normalized_form(h, hp, hn, tau, sym)
        assert abs(loss.item() - alt.item()) < 1e-12, (name, loss.item(), alt.item())
        loss.backward()
        t[name + ".config"] = [int(neg), int(sym), tau]
        t[name + ".h"], t[name + ".hp"] = h.detach(), hp.detach()
        t[name + ".loss"] = loss.detach()
        t[name + ".grad.h"], t[name + ".grad.hp"] = h.grad, hp.grad
        if neg:
            t[name + ".hn"], t[name + ".grad.hn"] = hn.detach(), hn.grad
        print(f"{name}: loss {loss.item():.6f}")
    path = os.path.join(OUT, "simcse.txt.gz")
    write_refs(path, t)
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
