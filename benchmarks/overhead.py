"""Fidelity and overhead of the harness's measurements against bare torch loops.

In one run, on N local ranks (gloo on CPU, NCCL on GPUs), alternating trials of:
- each collective op at one size: the harness driver's busbw vs a bare torch.distributed loop
  (timed as nccl-tests does: barrier, N back-to-back calls, total / N, slowest rank);
- gemm: the harness driver's TFLOP/s vs a bare `torch.mm` loop of the same shape and dtype;
- the harness's own cost per measured iteration: its timing loop around a call that does
  nothing, against a bare loop around the same call.
Both sides check their results before their speed counts (harness rows must pass their checks;
the bare results are compared with the expected values). Prints medians over trials, their
min-max, and the ratios harness / bare (goal: 0.97-1.03).

    python benchmarks/overhead.py                                     # 2 ranks, all_reduce 64M, gemm 1024^3
    python benchmarks/overhead.py --nproc 4 --ops all_gather,reduce_scatter,broadcast --bytes 16M --no-gemm
    python benchmarks/overhead.py --nproc 8 --bytes 1G --shape 8192x8192x8192 --dtype bfloat16   # a GPU node
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness import units
from harness.bench.base import BenchSpec, PlanEnv
from harness.bench.collectives.all_gather import ALL_GATHER
from harness.bench.collectives.reduce_scatter import REDUCE_SCATTER
from harness.bench.driver import plan_suite, run_suite
from harness.bench.timing import measure
from harness.devices import DTYPES
from harness.dist import DistContext, LaunchEnv, free_port


def _bare(op: str, count: int, ctx: DistContext) -> tuple[Callable[[], None], Callable[[], bool]]:
    """A bare call of `op` and a check of its result (ones everywhere in, so results are known)."""
    n, device = ctx.world_size, ctx.device
    if op == "all_reduce":
        t = torch.ones(count, device=device)
        return (lambda: dist.all_reduce(t)), (lambda: bool(torch.all(t == n)))
    if op == "broadcast":
        t = torch.full((count,), float(ctx.rank), device=device)
        return (lambda: dist.broadcast(t, src=0)), (lambda: bool(torch.all(t == 0)))
    if op == "all_gather":
        inp, out = torch.full((count // n,), float(ctx.rank), device=device), torch.empty(count, device=device)
        expected = torch.arange(n, device=device).repeat_interleave(count // n).float()
        return (lambda: ALL_GATHER(out, inp)), (lambda: bool(torch.equal(out, expected)))
    if op == "reduce_scatter":
        inp, out = torch.ones(count, device=device), torch.empty(count // n, device=device)
        return (lambda: REDUCE_SCATTER(out, inp)), (lambda: bool(torch.all(out == n)))
    raise SystemExit(f"no bare loop for {op}; choose from all_reduce, all_gather, reduce_scatter, broadcast")


# The harness mode that matches the bare call (torch's in-place all_reduce and broadcast).
IN_PLACE = {"all_reduce": True, "broadcast": True, "all_gather": False, "reduce_scatter": False}


def bare_busbw(op: str, ctx: DistContext, nbytes: int, warmup: int, iters: int) -> float:
    count = nbytes // 4 // ctx.world_size * ctx.world_size
    run, ok = _bare(op, count, ctx)
    run()
    sync(ctx)
    assert ok(), f"bare {op} gave a wrong result"
    for _ in range(warmup):
        run()
    sync(ctx)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    sync(ctx)
    elapsed = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return units.busbw_gbps(op, nbytes, float(elapsed), ctx.world_size)


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


def loop_overhead_us(iters: int = 20000) -> tuple[float, float]:
    """(harness, bare) wall time per iteration around a call that does nothing, in us."""
    device = torch.device("cpu")
    dist.barrier()
    start = time.perf_counter()
    measure(lambda: None, device=device, warmup=0, iters=iters)
    harness = (time.perf_counter() - start) / iters * 1e6
    nothing = lambda: None  # noqa: E731
    start = time.perf_counter()
    for _ in range(iters):
        nothing()
    bare = (time.perf_counter() - start) / iters * 1e6
    return harness, bare


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
    env = PlanEnv(device.type, 2**40, world_size=world)
    ops = [op for op in args.ops.split(",") if op]
    plans = {}
    for op in ops:
        spec = BenchSpec(("float32",), args.warmup, args.iters, nbytes, nbytes, 2, None, in_place=IN_PLACE[op])
        plans[op] = plan_suite([op], spec, env)
    if args.gemm:
        plans["gemm"] = plan_suite(["gemm"], BenchSpec((args.dtype,), args.warmup, args.iters, 1, 1, 2, (shape,)), env)
    figures: dict[str, dict[str, list[float]]] = {name: {"h": [], "b": []} for name in plans}
    for trial in range(args.trials):
        for side in ("h", "b") if trial % 2 == 0 else ("b", "h"):  # alternate: drift hits both sides alike
            for name, plan in plans.items():
                if side == "h":
                    result = run_suite(plan, ctx)
                    if rank == 0:
                        assert result.failed == 0, f"harness check failed for {name}"
                        row = result.rows[name][0]
                        figures[name]["h"].append(row["tflops"] if name == "gemm" else row["busbw_gbps"])
                elif name == "gemm":
                    figures[name]["b"].append(bare_mm(ctx, shape, args.dtype, args.warmup, args.iters))
                else:
                    figures[name]["b"].append(bare_busbw(name, ctx, nbytes, args.warmup, args.iters))
    harness_us, bare_us = loop_overhead_us()  # on every rank: measure() passes a barrier
    if rank == 0:
        where = torch.cuda.get_device_name() if cuda else f"CPU, {world} ranks x {torch.get_num_threads()} threads"
        print(f"device: {where}; torch {torch.__version__}; {args.trials} trials x {args.iters} iterations")
        print(f"{'measure':<44} {'harness':>22} {'bare loop':>22} {'ratio':>7}")
        for name, values in figures.items():
            label = f"gemm {args.shape} {args.dtype} [TFLOP/s]" if name == "gemm" else (
                f"{name} {args.bytes} float32, {world} ranks [busbw GB/s]")  # fmt: skip

            def fmt(v: list[float]) -> str:
                return f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"

            ratio = statistics.median(values["h"]) / statistics.median(values["b"])
            print(f"{label:<44} {fmt(values['h']):>22} {fmt(values['b']):>22} {ratio:>7.3f}")
        print(f"harness timing loop: {harness_us:.2f} us per iteration around a no-op, bare loop {bare_us:.2f} us: "
              f"the harness adds {harness_us - bare_us:.2f} us per measured iteration")  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=torch.cuda.device_count() or 2)
    parser.add_argument(
        "--ops", default="all_reduce", help="comma list of all_reduce, all_gather, reduce_scatter, broadcast"
    )
    parser.add_argument("--bytes", default="64M")
    parser.add_argument("--shape", default="1024x1024x1024")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--no-gemm", dest="gemm", action="store_false")
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    mp.spawn(worker, args=(args, free_port()), nprocs=args.nproc, join=True)
    os._exit(0)  # skip teardown: gloo's rare abort at interpreter exit (see harness.dist.hard_exit)


if __name__ == "__main__":
    main()
