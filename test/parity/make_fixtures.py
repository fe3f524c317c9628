#!/usr/bin/env python3
"""Parity fixtures for the native GPT-2 engine (read by test/parity.test.ts).

Regenerate (needs PyTorch; `npm test` does not, it only reads the committed files):

    /usr/bin/python3 test/parity/make_fixtures.py

The output is deterministic: running it twice gives byte-identical files (check with
`sha256sum test/fixtures/parity/*`).

What it computes, in float64 with PyTorch autograd, for a tiny GPT-2 (V=67, maxT=24, L=2, NH=4, C=32)
and one batch B=2, T=19:
  - the loss (mean cross-entropy over all B*T positions) and the logits (B,T,V),
  - the gradient of the loss with respect to every parameter, in the engine's flat layout,
  - the global gradient L2 norm before clipping,
  - the parameters after one optimizer step (t=1): clip_grad_norm_ (torch formula) then AdamW.

The float64 reference starts from the fp32-rounded weights, so both sides start from identical values.
The flat layout and the model must match src/train/param-layout.ts and native/model exactly:
  wte (V,C) wpe (maxT,C) ln1w (L,C) ln1b (L,C) qkvw (L,3C,C) qkvb (L,3C) attprojw (L,C,C) attprojb (L,C)
  ln2w (L,C) ln2b (L,C) fcw (L,4C,C) fcb (L,4C) fcprojw (L,C,4C) fcprojb (L,C) lnfw (C) lnfb (C)
Linear weights are (out, in): y = x @ W^T + b.  Files are little-endian.
"""
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

MODEL = {"vocabSize": 67, "maxSeqLen": 24, "numLayers": 2, "numHeads": 4, "channels": 32}
B, T = 2, 19
OPTIM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weightDecay": 0.1, "gradClip": 1.0}
SEED = 20240520
LN_EPS = 1e-5

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "parity")


def param_layout(cfg):
    """Mirror of paramLayout() in src/train/param-layout.ts: (name, shape, decay, kind)."""
    V, maxT, L, C = cfg["vocabSize"], cfg["maxSeqLen"], cfg["numLayers"], cfg["channels"]
    # kind picks the initialisation: 'mat' normal(0, 0.1), 'lnw' 1 + 0.1 randn, 'bias' 0.05 randn
    return [
        ("wte", (V, C), True, "mat"),
        ("wpe", (maxT, C), True, "mat"),
        ("ln1w", (L, C), False, "lnw"),
        ("ln1b", (L, C), False, "bias"),
        ("qkvw", (L, 3 * C, C), True, "mat"),
        ("qkvb", (L, 3 * C), False, "bias"),
        ("attprojw", (L, C, C), True, "mat"),
        ("attprojb", (L, C), False, "bias"),
        ("ln2w", (L, C), False, "lnw"),
        ("ln2b", (L, C), False, "bias"),
        ("fcw", (L, 4 * C, C), True, "mat"),
        ("fcb", (L, 4 * C), False, "bias"),
        ("fcprojw", (L, C, 4 * C), True, "mat"),
        ("fcprojb", (L, C), False, "bias"),
        ("lnfw", (C,), False, "lnw"),
        ("lnfb", (C,), False, "bias"),
    ]


def init_params(cfg, rng):
    """Random weights, rounded to fp32, returned as a flat float32 numpy array."""
    chunks = []
    for _name, shape, _decay, kind in param_layout(cfg):
        n = int(np.prod(shape))
        z = rng.standard_normal(n)
        if kind == "mat":
            x = 0.1 * z
        elif kind == "lnw":
            x = 1.0 + 0.1 * z
        else:
            x = 0.05 * z
        chunks.append(x.astype(np.float32))
    return np.concatenate(chunks)


def unflatten(flat, cfg):
    """Views of a flat torch tensor as named tensors (no copies, so autograd flows to `flat`)."""
    out, off = {}, 0
    for name, shape, _decay, _kind in param_layout(cfg):
        n = int(np.prod(shape))
        out[name] = flat[off:off + n].view(*shape)
        off += n
    assert off == flat.numel()
    return out


def forward(p, idx, cfg):
    """GPT-2 forward. idx: (B,T) int64. Returns logits (B,T,V)."""
    Bn, Tn = idx.shape
    C, NH, L = cfg["channels"], cfg["numHeads"], cfg["numLayers"]
    hs = C // NH
    x = p["wte"][idx] + p["wpe"][:Tn].unsqueeze(0)
    mask = torch.ones(Tn, Tn, dtype=torch.bool).tril()
    for l in range(L):
        h = F.layer_norm(x, (C,), p["ln1w"][l], p["ln1b"][l], LN_EPS)
        qkv = h @ p["qkvw"][l].t() + p["qkvb"][l]
        q, k, v = qkv.split(C, dim=-1)
        q = q.reshape(Bn, Tn, NH, hs).transpose(1, 2)
        k = k.reshape(Bn, Tn, NH, hs).transpose(1, 2)
        v = v.reshape(Bn, Tn, NH, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(Bn, Tn, C)
        x = x + (y @ p["attprojw"][l].t() + p["attprojb"][l])
        h = F.layer_norm(x, (C,), p["ln2w"][l], p["ln2b"][l], LN_EPS)
        u = F.gelu(h @ p["fcw"][l].t() + p["fcb"][l], approximate="tanh")
        x = x + (u @ p["fcprojw"][l].t() + p["fcprojb"][l])
    x = F.layer_norm(x, (C,), p["lnfw"], p["lnfb"], LN_EPS)
    return x @ p["wte"].t()


def decay_mask(cfg):
    parts = []
    for _name, shape, decay, _kind in param_layout(cfg):
        parts.append(torch.full((int(np.prod(shape)),), 1.0 if decay else 0.0, dtype=torch.float64))
    return torch.cat(parts)


def clip_and_adamw(params, grads, cfg, opt):
    """One step (t=1) from zero optimizer state, written out in the torch formulas.

    clip: total_norm = ||g||_2; clip_coef = min(max_norm / (total_norm + 1e-6), 1); g *= clip_coef
    AdamW: p *= 1 - lr*wd; m = (1-b1) g; v = (1-b2) g^2;
           p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
    """
    lr, b1, b2, eps, wd, clip = (opt[k] for k in ("lr", "beta1", "beta2", "eps", "weightDecay", "gradClip"))
    total_norm = grads.norm(2)
    g = grads
    if clip > 0:
        coef = torch.clamp(clip / (total_norm + 1e-6), max=1.0)
        g = g * coef
    t = 1
    m = (1 - b1) * g
    v = (1 - b2) * g * g
    wdv = wd * decay_mask(cfg)
    p = params * (1 - lr * wdv)
    denom = v.sqrt() / math.sqrt(1 - b2 ** t) + eps
    p = p - (lr / (1 - b1 ** t)) * m / denom
    return p, total_norm


def torch_optim_step(params, grads, cfg, opt):
    """Same step through torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW, as a cross-check."""
    tensors, off = [], 0
    for name, shape, decay, _kind in param_layout(cfg):
        n = int(np.prod(shape))
        pt = torch.nn.Parameter(params[off:off + n].clone())
        pt.grad = grads[off:off + n].clone()
        tensors.append((pt, decay))
        off += n
    ps = [pt for pt, _ in tensors]
    norm = torch.nn.utils.clip_grad_norm_(ps, opt["gradClip"])
    groups = [
        {"params": [pt for pt, d in tensors if d], "weight_decay": opt["weightDecay"]},
        {"params": [pt for pt, d in tensors if not d], "weight_decay": 0.0},
    ]
    o = torch.optim.AdamW(groups, lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"])
    o.step()
    return torch.cat([pt.detach() for pt in ps]), norm


def write(name, arr, dtype):
    a = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<"))
    path = os.path.join(OUT_DIR, name)
    with open(path, "wb") as f:
        f.write(a.tobytes())
    return path


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED)  # nothing below draws from torch's RNG; set for good measure
    rng = np.random.default_rng(SEED)
    cfg = MODEL
    V = cfg["vocabSize"]

    params32 = init_params(cfg, rng)
    tokens = rng.integers(0, V, size=(B, T + 1), dtype=np.int64).astype(np.int32)

    # float64 reference from the fp32-rounded weights
    flat = torch.from_numpy(params32.astype(np.float64)).requires_grad_(True)
    p = unflatten(flat, cfg)
    idx = torch.from_numpy(tokens[:, :T].astype(np.int64))
    tgt = torch.from_numpy(tokens[:, 1:].astype(np.int64))
    logits = forward(p, idx, cfg)
    loss = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
    loss.backward()
    grads = flat.grad.detach().clone()
    params64 = flat.detach().clone()

    after, grad_norm = clip_and_adamw(params64, grads, cfg, OPTIM)
    after_t, grad_norm_t = torch_optim_step(params64, grads, cfg, OPTIM)
    assert abs(grad_norm.item() - grad_norm_t.item()) <= 1e-12 * grad_norm.item(), (grad_norm, grad_norm_t)
    diff = (after - after_t).abs().max().item()
    assert diff <= 1e-12, f"manual AdamW step differs from torch.optim.AdamW by {diff}"

    os.makedirs(OUT_DIR, exist_ok=True)
    files = {
        "params.f32": write("params.f32", params32, np.float32),
        "tokens.i32": write("tokens.i32", tokens.reshape(-1), np.int32),
        "logits.f32": write("logits.f32", logits.detach().numpy().reshape(-1), np.float32),
        "grads.f32": write("grads.f32", grads.numpy(), np.float32),
        "params_after_step.f32": write("params_after_step.f32", after.numpy(), np.float32),
    }

    gn = grad_norm.item()
    clip_coef = min(OPTIM["gradClip"] / (gn + 1e-6), 1.0) if OPTIM["gradClip"] > 0 else 1.0
    config = {
        "model": cfg,
        "B": B,
        "T": T,
        "numParams": int(params32.size),
        "optimizer": OPTIM,
        "step": 1,
        "loss": loss.item(),
        "gradNorm": gn,
        "clipCoef": clip_coef,
        "maxAbsLogit": logits.detach().abs().max().item(),
        "seed": SEED,
        "reference": "PyTorch %s autograd in float64 from the fp32-rounded params; outputs rounded to fp32"
        % torch.__version__,
        "files": {
            "params.f32": "flat fp32 LE parameters in the paramLayout order (numParams values)",
            "tokens.i32": "int32 LE tokens, shape (B, T+1) row-major; inputs = [:, :T], targets = [:, 1:]",
            "logits.f32": "fp32 LE logits of the inputs, shape (B, T, V)",
            "grads.f32": "fp32 LE gradient of the mean loss, before clipping, paramLayout order",
            "params_after_step.f32": "fp32 LE params after one step (t=1): clip_grad_norm_ then AdamW; "
            "weight decay only on the decay tensors (wte, wpe, qkvw, attprojw, fcw, fcprojw)",
        },
        "sha256": {},
    }
    for name, path in files.items():
        with open(path, "rb") as f:
            config["sha256"][name] = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(OUT_DIR, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    print(
        json.dumps({"loss": config["loss"], "gradNorm": gn, "clipCoef": clip_coef, "numParams": config["numParams"]}),
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()
