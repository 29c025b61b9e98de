"""Train the token model's neural context net (sdk/tokennet.py) with torch, then quantize it.

The float net here mirrors the integer one step for step (same inputs, same layers, same
orientation after a transpose), so quantization is the only difference; lm-fit reports
the bits of both. One net serves both modes: a fraction of the training sequences has the
enhancement digits of its history replaced by "start", which is what the 175 mode feeds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gacflow.spec import TokenLayout
from gacflow.tokennet import ContextNet

HISTORY = 8
HIDDEN = 96
DROP_ENH = 0.1  # share of sequences seen as the 175 mode sends them (0.3: 0.02 bit/frame
# more in the 275 mode, nothing gained in the 175 mode)


def frame_digits(ids: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """Token ids [T] -> digits [T, D], most significant first (as the coder walks them)."""
    out, rest = [], np.asarray(ids, np.int64)
    for n in reversed(levels):
        out.append(rest % n)
        rest = rest // n
    return np.stack(out[::-1], 1)


def examples(seqs: list[np.ndarray], levels: tuple[int, ...], history: int,
             rng: np.random.Generator, drop_enh: float, n_base: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(history values [N, K, D], slot 0 = the previous frame; digits [N, D])."""
    start = np.array(levels, np.int64)
    xs, ys = [], []
    for s in seqs:
        d = frame_digits(s, levels)
        hist = d.copy()
        if rng.random() < drop_enh:
            hist[:, n_base:] = start[n_base:]
        padded = np.concatenate([np.repeat(start[None], history, 0), hist])
        idx = np.arange(len(s))[:, None] + history - 1 - np.arange(history)[None, :]
        xs.append(padded[idx])
        ys.append(d)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


class FloatNet(nn.Module):
    def __init__(self, levels: tuple[int, ...], history: int, hidden: int) -> None:
        super().__init__()
        self.levels = levels
        per_frame = np.cumsum([0, *[n + 1 for n in levels]])[:-1]
        offsets = np.arange(history)[:, None] * sum(n + 1 for n in levels) + per_frame[None]
        self.register_buffer("offsets", torch.from_numpy(offsets.astype(np.int64)))
        self.register_buffer("inner_at", torch.tensor(np.cumsum([0, *levels])[:-1]))
        self.emb = nn.Embedding(history * sum(n + 1 for n in levels), hidden)
        self.w1 = nn.Linear(hidden, hidden)
        self.inner = nn.Embedding(sum(levels), hidden)
        self.w2 = nn.ModuleList(nn.Linear(hidden, hidden) for _ in levels)
        self.w3 = nn.ModuleList(nn.Linear(hidden, max(levels)) for _ in levels)

    def forward(self, hist: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [N, D, max level] of each digit given the history and the
        frame's earlier digits."""
        h = torch.relu(self.w1(self.emb(hist + self.offsets).sum((1, 2))))
        out, a = [], h
        for j, n in enumerate(self.levels):
            logits = self.w3[j](torch.relu(self.w2[j](a)))
            logits[:, n:] = -1e9
            out.append(torch.log_softmax(logits, -1))
            a = a + self.inner(digits[:, j] + self.inner_at[j])
        return torch.stack(out, 1)

    def to_integer(self) -> ContextNet:
        t = lambda x: x.detach().double().numpy()  # noqa: E731
        w = {"emb": t(self.emb.weight), "w1": t(self.w1.weight).T, "b1": t(self.w1.bias),
             "inner": t(self.inner.weight),
             "w2": np.stack([t(m.weight).T for m in self.w2]),
             "b2": np.stack([t(m.bias) for m in self.w2]),
             "w3": np.stack([t(m.weight).T for m in self.w3]),
             "b3": np.stack([t(m.bias) for m in self.w3])}
        return ContextNet.from_float(self.levels, int(self.offsets.shape[0]), w)


def train_net(seqs: list[np.ndarray], layout: TokenLayout, history: int = HISTORY,
              hidden: int = HIDDEN, epochs: int = 6, seed: int = 0) -> ContextNet:
    """Fit the net on 275-mode token sequences (progress bar), return it quantized."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    levels = layout.all_levels
    x, y = examples(seqs, levels, history, rng, DROP_ENH, len(layout.base_levels))
    net = FloatNet(levels, history, hidden)
    batch = 512
    steps = epochs * -(-len(x) // batch)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    bar = tqdm(total=steps, desc="token net", unit="step")
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch):
            logp = net(x[idx], y[idx])
            loss = -logp.gather(2, y[idx][..., None]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(bits=f"{loss.item() * len(levels) / np.log(2):.2f}/frame")
    bar.close()
    return net.eval().to_integer()
