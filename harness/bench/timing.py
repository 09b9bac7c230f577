"""How the driver times a call, so that the harness's own work stays out of the figure.

- GPU: CUDA events are recorded on the stream around each iteration and read after one final
  synchronisation, so host-side Python overhead overlaps with device work as in nccl-tests.
- CPU: a monotonic clock (perf_counter) around each call; CPU ops (gloo included) return when
  done, so the call's time is the op's time. Iterations run back to back, as in nccl-tests and
  as in training; a barrier per iteration was tried and read about 8 % low at 64 MiB on gloo
  (a rank's clock starts while its peer is still leaving the barrier).
Untimed work between iterations (`prepare`, e.g. refreshing an out-of-place buffer) runs
outside the window in both cases. All ranks pass a barrier before the timed loop, so devices
measured per rank (gemm) run at the same time, as in a real job. The driver reports the median
per-iteration time (and min/max); collectives take the slowest rank's median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Timing:
    """Per-iteration times of one case on one rank, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    run: Callable[[], Any],
    *,
    device: torch.device,
    warmup: int,
    iters: int,
    prepare: Callable[[], Any] | None = None,
) -> Timing:
    """Run `warmup` untimed and `iters` timed iterations of `run`; see the module docstring."""
    for _ in range(warmup):
        if prepare:
            prepare()
        run()
    synchronize(device)
    if dist.is_initialized():
        dist.barrier()
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for start, end in zip(starts, ends, strict=True):
            if prepare:
                prepare()
            start.record()
            run()
            end.record()
        torch.cuda.synchronize(device)
        return Timing(tuple(s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)))
    samples = []
    clock = time.perf_counter
    for _ in range(iters):
        if prepare:
            prepare()
        t0 = clock()
        run()
        samples.append(clock() - t0)
    return Timing(tuple(samples))
