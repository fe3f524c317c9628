#!/usr/bin/env python3
"""PyTorch peer for the training bench: times full GPT-2 training steps on the CPU.

    /usr/bin/python3 bench/peers/torch_gpt2_step.py --preset gpt2 --vocab 50257 --B 4 --T 64 --threads 2 \
        --steps 5 --warmup 2

One step = forward, mean cross-entropy loss, backward, clip_grad_norm_(gradClip), AdamW (foreach) step,
zero_grad: the same work as the engine's step(). The model is the engine's GPT-2 (tied head, pre-LN,
tanh GELU, causal attention, LayerNorm eps 1e-5), in fp32. Prints one JSON line on stdout:
  {"impl":"torch","torch_version":...,"preset":...,"B":...,"T":...,"threads":...,"params":N,
   "seconds_per_step":median,"tokens_per_s":B*T/median, ...}

Attention: torch 1.13 has no scaled_dot_product_attention, so the scores are one batched GEMM that also
adds the causal mask (baddbmm with a -inf upper triangle and alpha = 1/sqrt(hs)), then softmax and a
second bmm. (Measured on 2 CPU threads: within noise of bmm + masked_fill; attention is a small share of
the step at T <= 256 anyway. The explicit path is kept rather than nn.MultiheadAttention, whose weights
are laid out differently.)

--check-parity compares this model's loss and gradients (float64) with test/fixtures/parity, to show that
the peer computes the same function as the engine; it prints one JSON line and exits.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "tiny": {"maxSeqLen": 64, "numLayers": 2, "numHeads": 4, "channels": 64},
    "small": {"maxSeqLen": 256, "numLayers": 6, "numHeads": 6, "channels": 384},
    "gpt2": {"maxSeqLen": 1024, "numLayers": 12, "numHeads": 12, "channels": 768},
}


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.C, self.NH = C, NH
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, 3 * C)
        self.attproj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)

    def forward(self, x, mask):
        B, T, C = x.shape
        NH, hs = self.NH, C // self.NH
        qkv = self.qkv(self.ln1(x))
        q, k, v = qkv.split(C, dim=-1)
        # (B,T,C) -> (B*NH, T, hs)
        q = q.reshape(B, T, NH, hs).transpose(1, 2).reshape(B * NH, T, hs)
        k = k.reshape(B, T, NH, hs).transpose(1, 2).reshape(B * NH, T, hs)
        v = v.reshape(B, T, NH, hs).transpose(1, 2).reshape(B * NH, T, hs)
        att = torch.baddbmm(mask[:T, :T], q, k.transpose(1, 2), beta=1.0, alpha=1.0 / math.sqrt(hs))
        att = att.softmax(dim=-1)
        y = torch.bmm(att, v).reshape(B, NH, T, hs).transpose(1, 2).reshape(B, T, C)
        x = x + self.attproj(y)
        x = x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x


class GPT(nn.Module):
    def __init__(self, V, maxT, L, NH, C):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(maxT, C)
        self.blocks = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.lnf = nn.LayerNorm(C, eps=1e-5)
        # additive causal mask: 0 on and below the diagonal, -inf above
        self.register_buffer("mask", torch.full((maxT, maxT), float("-inf")).triu(1), persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe.weight[:T]
        mask = self.mask.to(x.dtype)
        for blk in self.blocks:
            x = blk(x, mask)
        x = self.lnf(x)
        logits = x @ self.wte.weight.t()  # tied head, no bias
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    def flat_params(self):
        """The parameters in the engine's flat layout order (see src/train/param-layout.ts)."""
        L = len(self.blocks)
        b = self.blocks
        return [
            ("wte", self.wte.weight, True), ("wpe", self.wpe.weight, True),
            ("ln1w", [b[l].ln1.weight for l in range(L)], False), ("ln1b", [b[l].ln1.bias for l in range(L)], False),
            ("qkvw", [b[l].qkv.weight for l in range(L)], True), ("qkvb", [b[l].qkv.bias for l in range(L)], False),
            ("attprojw", [b[l].attproj.weight for l in range(L)], True),
            ("attprojb", [b[l].attproj.bias for l in range(L)], False),
            ("ln2w", [b[l].ln2.weight for l in range(L)], False), ("ln2b", [b[l].ln2.bias for l in range(L)], False),
            ("fcw", [b[l].fc.weight for l in range(L)], True), ("fcb", [b[l].fc.bias for l in range(L)], False),
            ("fcprojw", [b[l].fcproj.weight for l in range(L)], True),
            ("fcprojb", [b[l].fcproj.bias for l in range(L)], False),
            ("lnfw", self.lnf.weight, False), ("lnfb", self.lnf.bias, False),
        ]


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for _name, ts, d in model.flat_params():
        for t in ts if isinstance(ts, list) else [ts]:
            (decay if d else no_decay).append(t)
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay) + len(no_decay) == n_unique, "every parameter is in exactly one group"
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def check_parity():
    """float64 loss/gradients of this module on the parity fixtures vs the stored reference."""
    import numpy as np

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "fixtures", "parity")
    with open(os.path.join(root, "config.json")) as f:
        cfg = json.load(f)
    m = cfg["model"]
    B, T = cfg["B"], cfg["T"]
    model = GPT(m["vocabSize"], m["maxSeqLen"], m["numLayers"], m["numHeads"], m["channels"]).double()
    flat = np.fromfile(os.path.join(root, "params.f32"), dtype="<f4").astype(np.float64)
    ref_g = np.fromfile(os.path.join(root, "grads.f32"), dtype="<f4").astype(np.float64)
    tok = torch.from_numpy(np.fromfile(os.path.join(root, "tokens.i32"), dtype="<i4").astype(np.int64)).view(B, T + 1)
    entries = []
    off = 0
    with torch.no_grad():
        for name, ts, _d in model.flat_params():
            for t in ts if isinstance(ts, list) else [ts]:
                n = t.numel()
                t.copy_(torch.from_numpy(flat[off:off + n]).view_as(t))
                entries.append((name, t, off, n))
                off += n
    assert off == flat.size == cfg["numParams"]
    loss = model(tok[:, :T], tok[:, 1:])
    loss.backward()
    got = np.zeros_like(ref_g)
    for _name, t, o, n in entries:
        got[o:o + n] = t.grad.reshape(-1).numpy()
    worst = max(
        (np.linalg.norm(got[o:o + n] - ref_g[o:o + n]) / max(np.linalg.norm(ref_g[o:o + n]), 1e-30), name)
        for name, _t, o, n in entries
    )
    out = {"loss": loss.item(), "loss_ref": cfg["loss"], "loss_rel_err": abs(loss.item() - cfg["loss"]) / cfg["loss"],
           "worst_grad_rel_err": worst[0], "worst_grad_tensor": worst[1]}
    print(json.dumps(out))
    return 0 if out["loss_rel_err"] < 1e-9 and worst[0] < 1e-6 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check-parity", action="store_true", help="compare with test/fixtures/parity and exit")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.check_parity:
        return check_parity()

    p = PRESETS[args.preset]
    if args.T > p["maxSeqLen"]:
        ap.error(f"--T {args.T} exceeds maxSeqLen {p['maxSeqLen']} of preset {args.preset}")
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    torch.manual_seed(args.seed)
    model = GPT(args.vocab, p["maxSeqLen"], p["numLayers"], p["numHeads"], p["channels"])
    model.train()
    n_params = sum(t.numel() for t in {id(t): t for t in model.parameters()}.values())
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            foreach=True)
    params = [t for g in opt.param_groups for t in g["params"]]

    g = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(0, args.vocab, (args.B, args.T + 1), generator=g) for _ in range(min(8, args.warmup + args.steps))]

    times = []
    loss = None
    for i in range(args.warmup + args.steps):
        tok = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = model(tok[:, :-1], tok[:, 1:])
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)

    sps = statistics.median(times)
    print(json.dumps({
        "impl": "torch",
        "torch_version": torch.__version__,
        "preset": args.preset,
        "vocab": args.vocab,
        "B": args.B,
        "T": args.T,
        "threads": args.threads,
        "params": n_params,
        "steps": args.steps,
        "warmup": args.warmup,
        "seconds_per_step": sps,
        "seconds_min": min(times),
        "tokens_per_s": args.B * args.T / sps,
        "final_loss": loss.item(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
