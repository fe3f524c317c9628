#!/usr/bin/env python3
"""PyTorch peer for the training bench on a GPU: the engine's GPT-2 (bench/peers/torch_gpt2_step.py) trained
the way a PyTorch user would on CUDA: bf16 autocast, scaled_dot_product_attention (causal), fused AdamW,
eager or with torch.compile.

    /usr/bin/python3 bench/peers/torch_gpt2_cuda.py --preset gpt2 --B 16 --T 1024 --mode compile --steps 10

One step = forward, mean cross-entropy, backward, clip_grad_norm_, AdamW step, zero_grad; timed with CUDA
synchronization around it. Prints one JSON line; without torch >= 2.0 or a CUDA device it prints
{"skipped": reason} and exits 0.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001 - any import failure means "no peer here"
    print(json.dumps({"skipped": f"{sys.executable} cannot import torch ({e})"}))
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt2_step import GPT, PRESETS, Block, param_groups  # noqa: E402


def sdpa_block_forward(self, x, mask):
    """Block.forward with torch's fused causal attention instead of the explicit scores."""
    B, T, C = x.shape
    NH, hs = self.NH, C // self.NH
    q, k, v = self.qkv(self.ln1(x)).split(C, dim=-1)
    q, k, v = (t.reshape(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
    x = x + self.attproj(y)
    return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="gpt2")
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    major = int(torch.__version__.split(".")[0])
    if major < 2 or not hasattr(F, "scaled_dot_product_attention"):
        print(json.dumps({"skipped": f"torch {torch.__version__} has no scaled_dot_product_attention (needs >= 2.0)"}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": f"torch {torch.__version__} sees no CUDA device"}))
        return 0
    p = PRESETS[args.preset]
    if args.T > p["maxSeqLen"]:
        ap.error(f"--T {args.T} exceeds maxSeqLen {p['maxSeqLen']} of preset {args.preset}")
    torch.manual_seed(args.seed)
    Block.forward = sdpa_block_forward
    dev = torch.device("cuda")
    model = GPT(args.vocab, p["maxSeqLen"], p["numLayers"], p["numHeads"], p["channels"]).to(dev)
    model.train()
    n_params = sum(t.numel() for t in {id(t): t for t in model.parameters()}.values())
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    params = [t for g in opt.param_groups for t in g["params"]]
    step_model = torch.compile(model) if args.mode == "compile" else model
    g = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(0, args.vocab, (args.B, args.T + 1), generator=g).to(dev) for _ in range(4)]
    times, loss = [], None
    for i in range(args.warmup + args.steps):
        tok = batches[i % len(batches)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(tok[:, :-1], tok[:, 1:])
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    sps = statistics.median(times)
    print(json.dumps({
        "impl": f"torch-{args.mode}", "device": "cuda", "gpu": torch.cuda.get_device_name(0), "torch_version": torch.__version__,
        "preset": args.preset, "B": args.B, "T": args.T, "params": n_params, "steps": args.steps, "warmup": args.warmup,
        "seconds_per_step": sps, "seconds_min": min(times), "tokens_per_s": args.B * args.T / sps,
        "final_loss": float(loss.item()) if not math.isnan(loss.item()) else None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
