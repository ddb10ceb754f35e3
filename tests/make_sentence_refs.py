#!/usr/bin/env python3
"""make_sentence_refs.py — PyTorch references for the sentence model (lib/sentence.h).

Developer-run (needs torch); CI only reads the committed files it writes:
  tests/ref/sentence/cnn.txt.gz             torch.nn.Conv1d(padding='same') x4 widths, ReLU, max over time
  tests/ref/sentence/lstm.txt.gz            torch.nn.LSTM(bidirectional=True, batch_first=True) with
                                            pack_padded_sequence, output cat(h_n[0], h_n[1])
  tests/ref/sentence/model.txt.gz           sbert-cnn-bilstm: cat(mean, CNN max-pool, BiLSTM finals)
  tests/ref/sentence/model_over_cnn.txt.gz  the same with the BiLSTM reading the CNN feature map
Each holds offsets, the packed input x, every parameter under its torch state_dict name, an
upstream gradient R, the output, and grad.x / grad.<name> of sum(out * R). Evaluation mode
(no dropout). Computed in float64 from float32-representable inputs, so the files are the
exact answer the fp32 C code is compared with.

  python3 tests/make_sentence_refs.py
"""
import os
import sys
import warnings

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

sys.path.insert(0, os.path.dirname(__file__))
from reflib import write_refs  # noqa: E402

C, WIDTHS, FILTERS, H = 8, [1, 2, 3, 4], [3, 2, 4, 3], 5
LENGTHS = [1, 3, 6, 2, 9, 4]  # a length-1 sequence and ones shorter than the widest kernel
OUT = os.path.join(os.path.dirname(__file__), "ref", "sentence")


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(C, f, w, padding="same") for w, f in zip(WIDTHS, FILTERS))

    def feature_map(self, seqs):  # list of [L, C] -> list of [L, F]
        return [torch.cat([torch.relu(conv(s.t().unsqueeze(0)))[0].t() for conv in self.convs], 1) for s in seqs]


class SentenceModel(nn.Module):
    def __init__(self, over_cnn):
        super().__init__()
        self.over_cnn = over_cnn
        self.cnn = CNN()
        self.lstm = nn.LSTM(sum(FILTERS) if over_cnn else C, H, bidirectional=True, batch_first=True)

    def bilstm(self, seqs):
        lengths = torch.tensor([len(s) for s in seqs])
        packed = pack_padded_sequence(pad_sequence(seqs, batch_first=True), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return torch.cat([h_n[0], h_n[1]], 1)

    def forward(self, seqs):
        fmap = self.cnn.feature_map(seqs)
        mean = torch.stack([s.mean(0) for s in seqs])
        pool = torch.stack([m.max(0).values for m in fmap])
        return torch.cat([mean, pool, self.bilstm(fmap if self.over_cnn else seqs)], 1)


def split(x):
    return list(torch.split(x, LENGTHS))


def dump(name, module, run, gen, prefix=""):
    # float32-representable values, evaluated in float64
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.float().double())
    x = torch.randn(sum(LENGTHS), C, generator=gen, dtype=torch.float32).double().requires_grad_()
    module.zero_grad(set_to_none=True)  # 'lstm' and 'model' share one nn.LSTM
    out = run(split(x))
    R = torch.rand(out.shape, generator=gen, dtype=torch.float32).double() * 2 - 1
    (out * R).sum().backward()
    offsets = [0]
    for n in LENGTHS:
        offsets.append(offsets[-1] + n)
    t = {"offsets": offsets, "x": x.detach()}
    t.update({prefix + k: v.detach() for k, v in module.state_dict().items()})
    t.update({"R": R, "out": out.detach(), "grad.x": x.grad})
    t.update({"grad." + prefix + k: p.grad for k, p in module.named_parameters()})
    path = os.path.join(OUT, name + ".txt.gz")
    write_refs(path, t)
    print(f"{path}: out {tuple(out.shape)}, {os.path.getsize(path)} bytes")


def main():
    warnings.filterwarnings("ignore", message="Using padding='same'")
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(1234)
    gen = torch.Generator().manual_seed(99)
    cnn = CNN().double()
    dump("cnn", cnn, lambda seqs: torch.stack([m.max(0).values for m in cnn.feature_map(seqs)]), gen, "cnn.")
    model = SentenceModel(False).double()
    dump("lstm", model.lstm, model.bilstm, gen, "lstm.")
    dump("model", model, model, gen)
    model = SentenceModel(True).double()
    dump("model_over_cnn", model, model, gen)


if __name__ == "__main__":
    main()
