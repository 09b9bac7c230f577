"""all_reduce with nccl-tests semantics: S = count × dtype size, busbw factor 2(n−1)/n.

Expected data: rank r holds ((i + r) mod 3) − 1 at element i, so every element of every dtype is
exact and any contiguous range of ranks sums to −1, 0 or 1: the sum is exact in bf16 and int
types at any world size, and the check can demand equality. torch's all_reduce works in place;
the out-of-place case refreshes its output from a separate input buffer before each call,
outside the timed window.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness import units
from harness.bench.base import Benchmark, BenchSpec, Case, Column
from harness.devices import DTYPES
from harness.dist import DistContext
from harness.errors import ConfigError

DTYPE_CHOICES = ("float64", "float32", "bfloat16", "float16", "int32", "int64")


def message_sizes(min_bytes: int, max_bytes: int, step_factor: int) -> list[int]:
    """min, min·f, min·f², ... up to max (nccl-tests -b/-e/-f)."""
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= step_factor
    return sizes


def pattern(count: int, rank: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Rank `rank`'s input: ((i + rank) mod 3) − 1."""
    return ((torch.arange(count, device=device) + rank) % 3 - 1).to(dtype)


def expected_sum(world_size: int) -> list[int]:
    """The sum over ranks of pattern(...)[i] for i mod 3 = 0, 1, 2."""
    return [sum(((j + r) % 3) - 1 for r in range(world_size % 3)) for j in range(3)]


class AllReduce(Benchmark):
    name = "all_reduce"
    description = "all_reduce (sum) over all ranks: algbw and busbw per message size, every result checked"
    collective = True
    keys = ("dtype", "min_bytes", "max_bytes", "step_factor", "warmup", "iters")
    columns = (
        Column("dtype", "dtype"),
        Column("bytes", "bytes", "{:,}"),
        Column("in_place", "in-place"),
        Column("time_us", "time (us)", "{:.1f}"),
        Column("algbw_gbps", "algbw (GB/s)", "{:.3f}"),
        Column("busbw_gbps", "busbw (GB/s)", "{:.3f}"),
        Column("wrong", "#wrong"),
    )

    def dtypes(self, device_type: str) -> tuple[str, ...]:
        return DTYPE_CHOICES

    def default_dtypes(self, device_type: str) -> tuple[str, ...]:
        return ("float32",)

    def plan(self, spec: BenchSpec, dtypes: tuple[str, ...], device_type: str, memory_bytes: int) -> list[dict]:
        # Input, output and the check's comparison: about three buffers of the largest size.
        if 3 * spec.max_bytes > 0.9 * memory_bytes:
            raise ConfigError(
                f"bench.max_bytes={units.format_bytes(spec.max_bytes)} needs about "
                f"{3 * spec.max_bytes / 2**30:.1f} GiB but the device has {memory_bytes / 2**30:.1f} GiB"
            )
        cases = []
        for dtype in dtypes:
            size = DTYPES[dtype][1]
            for nbytes in message_sizes(spec.min_bytes, spec.max_bytes, spec.step_factor):
                count = nbytes // size
                if count == 0:
                    continue
                for in_place in (False, True):
                    cases.append(
                        {
                            "op": "all_reduce",
                            "redop": "sum",
                            "dtype": dtype,
                            "bytes": count * size,
                            "count": count,
                            "in_place": in_place,
                        }
                    )
        if not cases:
            raise ConfigError("bench.max_bytes is smaller than one element of every dtype asked for")
        return cases

    def build(self, case: dict, ctx: DistContext, spec: BenchSpec) -> Case:
        dtype, count = DTYPES[case["dtype"]][0], case["count"]
        inp = pattern(count, ctx.rank, dtype, ctx.device)
        out = inp if case["in_place"] else torch.empty_like(inp)
        expected = expected_sum(ctx.world_size)

        def verify() -> dict:
            wrong = sum(int((out[j::3] != expected[j]).sum()) for j in range(3))
            return {"wrong": wrong, "passed": wrong == 0}

        def figures(seconds: float) -> dict:
            return {
                "algbw_gbps": units.algbw_gbps(case["bytes"], seconds),
                "busbw_gbps": units.busbw_gbps("all_reduce", case["bytes"], seconds, ctx.world_size),
            }

        if case["in_place"]:
            pristine = inp.clone()
            return Case(
                dict(case), lambda: dist.all_reduce(out), verify, out, figures, reset=lambda: out.copy_(pristine)
            )
        return Case(dict(case), lambda: dist.all_reduce(out), verify, out, figures, prepare=lambda: out.copy_(inp))


BENCHMARK = AllReduce()
