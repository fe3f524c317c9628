#!/usr/bin/env python3
"""PyTorch peer for the attention bench's GPU rows: torch.nn.functional.scaled_dot_product_attention on CUDA, bf16,
with the FLASH and the CUDNN backends (torch.nn.attention.sdpa_kernel), forward and backward.

    /usr/bin/python3 bench/peers/torch_sdpa.py --B 8 --T 1024,4096 --C 2048 --hs 64,128 --min-seconds 0.3

The same cases as `covenant_native_gpu_bench attention` (native/bench/gpu_bench.cu): for each head size hs,
NH = C / hs heads, each T, causal and not. q, k, v are separate (B, NH, T, hs) bf16 leaves that require grad
(the layout each backend takes without a copy); the forward is the training forward (autograd records it, the
backend writes its log-sum-exp), timed alone; the backward is torch.autograd.grad of the output against dq, dk,
dv with a fixed random gradient, on one recorded forward (retain_graph), timed alone. Timing: CUDA events on the
current stream around each call, one untimed warm-up, then reps until --min-seconds of timed work and at least 3
reps; seconds = median. FLOPs as covenant's: forward 4*B*NH*T^2*hs, halved when causal; backward 2.5x forward.

Prints one JSON row per measurement on stdout:
  {"impl":"torch-flash"|"torch-cudnn","device":"cuda","op":"attention","dtype":"bf16","pass":"fwd"|"bwd",
   "B":..,"T":..,"C":..,"NH":..,"hs":..,"causal":..,"seconds":..,"seconds_min":..,"reps":..,"flops":..,
   "tflops":..,"torch_version":..}
a backend that refuses a case prints {"impl":...,"skipped":"<why>", ...the case...} for it; without torch, CUDA
or torch.nn.attention (torch >= 2.3) it prints the one row {"skipped":"<why>"} and exits 0.
"""
import argparse
import json
import statistics
import sys


def skip(why: str) -> int:
    print(json.dumps({"skipped": why}), flush=True)
    return 0


def ints(s: str) -> list:
    return [int(x) for x in s.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--T", type=ints, default=[1024, 4096], help="comma-separated sequence lengths")
    ap.add_argument("--C", type=int, default=2048)
    ap.add_argument("--hs", type=ints, default=[64, 128], help="comma-separated head sizes (NH = C / hs)")
    ap.add_argument("--min-seconds", type=float, default=0.3)
    a = ap.parse_args()

    try:
        import torch
    except ImportError as e:
        return skip(f"{sys.executable} cannot import torch ({e})")
    if not torch.cuda.is_available():
        return skip(f"torch {torch.__version__} sees no CUDA device (torch.version.cuda = {torch.version.cuda})")
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return skip(f"torch {torch.__version__} has no torch.nn.attention.sdpa_kernel (needs torch >= 2.3)")
    import torch.nn.functional as F

    backends = [("torch-flash", SDPBackend.FLASH_ATTENTION), ("torch-cudnn", SDPBackend.CUDNN_ATTENTION)]
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(21)

    def time_cuda(fn) -> tuple:
        fn()
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ts = []
        while sum(ts) < a.min_seconds or len(ts) < 3:
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            ts.append(start.elapsed_time(stop) * 1e-3)
            if len(ts) >= 10000:
                break
        return statistics.median(ts), min(ts), len(ts)

    for hs in a.hs:
        if a.C % hs:
            ap.error(f"--hs {hs} does not divide --C {a.C}")
        NH = a.C // hs
        for T in a.T:
            shape = (a.B, NH, T, hs)
            q, k, v = (torch.empty(shape, device=dev, dtype=torch.bfloat16).uniform_(-1.5, 1.5, generator=gen)
                       .requires_grad_() for _ in range(3))
            dout = torch.empty(shape, device=dev, dtype=torch.bfloat16).uniform_(-1, 1, generator=gen)
            for causal in (True, False):
                fwd_flops = 4.0 * a.B * NH * T * T * hs * (0.5 if causal else 1.0)
                case = {"device": "cuda", "op": "attention", "dtype": "bf16", "B": a.B, "T": T, "C": a.C, "NH": NH,
                        "hs": hs, "causal": causal}
                for impl, backend in backends:
                    try:
                        with sdpa_kernel([backend]):
                            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                            fwd = time_cuda(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
                            bwd = time_cuda(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
                    except RuntimeError as e:  # the backend refuses this case (device, build or shape)
                        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                        print(json.dumps({"impl": impl, **case, "skipped": msg[:300],
                                          "torch_version": torch.__version__}), flush=True)
                        continue
                    finally:
                        out = None
                    for name, (med, fastest, reps), flops in (("fwd", fwd, fwd_flops), ("bwd", bwd, 2.5 * fwd_flops)):
                        print(json.dumps({"impl": impl, **case, "pass": name, "seconds": med, "seconds_min": fastest,
                                          "reps": reps, "flops": flops, "tflops": flops / med / 1e12,
                                          "torch_version": torch.__version__}), flush=True)
            del q, k, v, dout
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
