#!/usr/bin/env python3
"""PyTorch peer for the all-reduce bench: one rank of a gloo all-reduce (torch.distributed) on the CPU.

    /usr/bin/python3 bench/peers/torch_gloo_allreduce.py --rank 0 --world 4 --init tcp://127.0.0.1:29500 \
        --sizes-mib 1,4,16 --warmup 1 --reps 10,10,7

bench/allreduce.ts starts one such process per rank (under `ip netns exec` on the shaped links, with
GLOO_SOCKET_IFNAME naming the interface gloo uses). The process group is formed once (init over tcp://),
then for each size: a tensor of that many fp32 bytes (seeded randn), warm-up collectives, then timed ones.
Each timed collective is dist.barrier(), then the clock around dist.all_reduce(SUM) followed by an in-place
divide by the world size: the mean, as covenant's all-reduce computes. (torch 1.13's gloo backend refuses
ReduceOp.AVG: "Cannot use ReduceOp.AVG with Gloo"; where a newer torch accepts it, --op avg uses it.)
Prints one JSON line per size on stdout:
  {"impl":"gloo","rank":r,"N":world,"bytes":b,"n":elements,"op":"sum+div","seconds":median,
   "seconds_min":fastest,"cpu_seconds":median CPU time of the process per collective,"reps":k,"torch_version":...}
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.distributed as dist


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--init", required=True, help="tcp://HOST:PORT of rank 0's store")
    ap.add_argument("--sizes-mib", required=True, help="comma-separated sizes in MiB of fp32")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", default="5", help="timed collectives: one number, or one per size (comma-separated)")
    ap.add_argument("--op", choices=["sum", "avg"], default="sum")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the divide)")
    ap.add_argument("--timeout-s", type=float, default=300)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    import datetime

    dist.init_process_group("gloo", init_method=a.init, rank=a.rank, world_size=a.world,
                            timeout=datetime.timedelta(seconds=a.timeout_s))
    op = dist.ReduceOp.AVG if a.op == "avg" else dist.ReduceOp.SUM
    gen = torch.Generator().manual_seed(1000 + a.rank)
    sizes = [float(x) for x in a.sizes_mib.split(",")]
    reps_list = [int(x) for x in a.reps.split(",")]
    if len(reps_list) == 1:
        reps_list *= len(sizes)
    if len(reps_list) != len(sizes):
        ap.error("--reps needs one number or one per size")
    for mib, reps in zip(sizes, reps_list):
        n = int(mib * (1 << 20)) // 4
        t = torch.randn(n, generator=gen, dtype=torch.float32)

        def one() -> tuple:
            dist.barrier()
            c0 = time.process_time()  # every thread of the process: gloo's own too
            t0 = time.perf_counter()
            dist.all_reduce(t, op=op)
            if a.op == "sum":
                t.div_(a.world)
            return time.perf_counter() - t0, time.process_time() - c0

        for _ in range(a.warmup):
            one()
        runs = [one() for _ in range(reps)]
        ts = [w for w, _ in runs]
        print(json.dumps({"impl": "gloo", "rank": a.rank, "N": a.world, "bytes": n * 4, "n": n,
                          "op": "avg" if a.op == "avg" else "sum+div", "seconds": statistics.median(ts),
                          "seconds_min": min(ts), "cpu_seconds": statistics.median(c for _, c in runs), "reps": reps,
                          "torch_version": torch.__version__}), flush=True)
        del t
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
