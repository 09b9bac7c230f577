"""How much does the harness's measurement differ from a bare loop? (goal: ratio 0.97-1.03)

In one run, on N local ranks (gloo on CPU, NCCL on GPUs), alternating trials of:
- all_reduce at 64 MiB: the harness driver's busbw vs a bare `dist.all_reduce` loop
  (timed as nccl-tests does: barrier, N back-to-back calls, total / N, slowest rank);
- gemm: the harness driver's TFLOP/s vs a bare `torch.mm` loop of the same shape and dtype.
Both sides are checked before their speed counts (harness rows must pass their checks; the bare
all_reduce result must equal the world size, the bare product must match a float64 product).
Prints medians over trials, their min-max, and the ratios.

    python benchmarks/overhead.py                      # 2 ranks, 64 MiB, 1024^3 float32, 7 trials
    python benchmarks/overhead.py --nproc 8 --bytes 1G --shape 8192x8192x8192 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness import units
from harness.bench.base import BenchSpec
from harness.bench.driver import plan_suite, run_suite
from harness.devices import DTYPES
from harness.dist import DistContext, LaunchEnv, free_port


def bare_all_reduce(ctx: DistContext, nbytes: int, warmup: int, iters: int) -> float:
    """busbw of a plain loop; checked first."""
    tensor = torch.ones(nbytes // 4, device=ctx.device)
    dist.all_reduce(tensor)
    assert torch.all(tensor == ctx.world_size), "bare all_reduce gave a wrong result"
    for _ in range(warmup):
        dist.all_reduce(tensor)
    sync(ctx)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(tensor)
    sync(ctx)
    elapsed = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return units.busbw_gbps("all_reduce", nbytes, float(elapsed), ctx.world_size)


def bare_mm(ctx: DistContext, shape: tuple[int, int, int], dtype: str, warmup: int, iters: int) -> float:
    m, n, k = shape
    a = torch.randn(m, k, device=ctx.device).to(DTYPES[dtype][0])
    b = torch.randn(k, n, device=ctx.device).to(DTYPES[dtype][0])
    out = torch.mm(a, b)
    ref = a.double() @ b.double()
    assert float(torch.linalg.norm(out.double() - ref) / torch.linalg.norm(ref)) < 2e-2, "bare mm is wrong"
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    sync(ctx)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        torch.mm(a, b, out=out)
    sync(ctx)
    return units.tflops(units.gemm_flops(m, n, k), (time.perf_counter() - start) / iters)


def sync(ctx: DistContext) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()


def worker(rank: int, args: argparse.Namespace, port: int) -> None:
    world = args.nproc
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    store = dist.TCPStore("127.0.0.1", port, world, is_master=rank == 0)
    dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=world)
    ctx = DistContext(LaunchEnv("local", rank, world, rank, world), device, "nccl" if cuda else "gloo")
    nbytes = units.parse_bytes(args.bytes)
    shape = tuple(int(x) for x in args.shape.split("x"))
    spec_ar = BenchSpec(("float32",), args.warmup, args.iters, nbytes, nbytes, 2, None)
    spec_mm = BenchSpec((args.dtype,), args.warmup, args.iters, 1, 1, 2, (shape,))
    plan_ar = plan_suite(["all_reduce"], spec_ar, device.type, 2**40)
    plan_ar.items[0][1][:] = [c for c in plan_ar.items[0][1] if c["in_place"]]  # the bare loop is in place
    plan_mm = plan_suite(["gemm"], spec_mm, device.type, 2**40)
    figures: dict[str, list[float]] = {"h_ar": [], "b_ar": [], "h_mm": [], "b_mm": []}
    for trial in range(args.trials):
        # Alternate the order so that drift (heat, noise) hits both sides alike.
        order = ("h", "b") if trial % 2 == 0 else ("b", "h")
        for side in order:
            if side == "h":
                res = run_suite(plan_ar, ctx)
                res_mm = run_suite(plan_mm, ctx)
                if rank == 0:
                    assert res.failed == 0 and res_mm.failed == 0, "harness check failed"
                    figures["h_ar"].append(res.rows["all_reduce"][0]["busbw_gbps"])
                    figures["h_mm"].append(res_mm.rows["gemm"][0]["tflops"])
            else:
                figures["b_ar"].append(bare_all_reduce(ctx, nbytes, args.warmup, args.iters))
                figures["b_mm"].append(bare_mm(ctx, shape, args.dtype, args.warmup, args.iters))
    if rank == 0:
        where = torch.cuda.get_device_name() if cuda else f"CPU, {world} ranks x {torch.get_num_threads()} threads"
        print(f"device: {where}; torch {torch.__version__}; {args.trials} trials, {args.iters} iterations each")
        print(f"{'measure':<34} {'harness':>22} {'bare loop':>22} {'ratio':>7}")
        for key, label, unit in (("ar", f"all_reduce {args.bytes} float32 busbw", "GB/s"),
                                 ("mm", f"gemm {args.shape} {args.dtype}", "TFLOP/s")):  # fmt: skip
            h, b = figures[f"h_{key}"], figures[f"b_{key}"]

            def fmt(v: list[float], unit: str = unit) -> str:
                return f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"

            ratio = statistics.median(h) / statistics.median(b)
            print(f"{label + ' [' + unit + ']':<34} {fmt(h):>22} {fmt(b):>22} {ratio:>7.3f}")
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=torch.cuda.device_count() or 2)
    parser.add_argument("--bytes", default="64M")
    parser.add_argument("--shape", default="1024x1024x1024")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    mp.spawn(worker, args=(args, free_port()), nprocs=args.nproc, join=True)
    os._exit(0)  # skip teardown: gloo's rare abort at interpreter exit (see harness.dist.hard_exit)


if __name__ == "__main__":
    main()
