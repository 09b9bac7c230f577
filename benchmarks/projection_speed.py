"""Time of the performance model per projected point (issue 15: well under a second at 16,384 GPUs).

Times, as medians over trials (min-max beside them), on this machine's CPU:
- one step estimate of a given layout (Llama 3 405B, TP 8 × PP 16, 16,384 H100);
- the planner at 16,384 GPUs (every candidate layout costed, the best five kept);
- one `harness project` point without a layout at 10,000 B200 (planner, plus the fall-back to the
  largest usable count below 10,000);
- a whole curve, 8..16384x2 (12 points), without a layout.
The model caches per-layer compute across calls; each trial starts with a cleared cache, so the
figures are cold-cache times of one call.

    python benchmarks/projection_speed.py
    python benchmarks/projection_speed.py --trials 20 --model llama3-70b
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from harness.hardware import profiles
from harness.perf.device import device_from_profile
from harness.perf.layout import Layout
from harness.perf.project import project
from harness.perf.search import plan_layouts
from harness.perf.shape import ModelShape, shape_from_mapping
from harness.perf.step import _layer, estimate_step
from harness.perf.workload import Workload

ROOT = Path(__file__).resolve().parents[1]


def model_shape(name: str) -> ModelShape:
    data = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "model" / f"{name}.yaml"))
    assert isinstance(data, dict)
    return shape_from_mapping(data)


def timed(call: Callable[[], object], trials: int) -> tuple[float, float, float]:
    times = []
    for _ in range(trials):
        _layer.cache_clear()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=11)
    parser.add_argument("--model", default="llama3-405b")
    args = parser.parse_args()
    shape = model_shape(args.model)
    h100 = device_from_profile(profiles()["h100-sxm"])
    b200 = device_from_profile(profiles()["b200"])
    work = Workload(seq_len=8192, global_batch=2048)
    layout = Layout(tp=8, pp=16).resolve(16384, global_batch=2048)
    cases = {
        "estimate_step, TP8 PP16, 16,384 GPUs": lambda: estimate_step(shape, layout, work, h100),
        "planner, 16,384 GPUs (best 5)": lambda: plan_layouts(shape, h100, work, gpus=16384),
        "project one point, 10,000 B200, no layout": lambda: project(shape, b200, work, [10000]),
        "project 8..16384x2 (12 points), no layout": lambda: project(shape, b200, work, "8..16384x2"),
    }
    print(f"{args.model}, seq 8192, 2,048 sequences per step; median (min-max) over {args.trials} trials")
    for name, call in cases.items():
        median, low, high = timed(call, args.trials)
        print(f"  {name:45s} {median * 1e3:9.2f} ms  ({low * 1e3:.2f}-{high * 1e3:.2f})")
    candidates = len(plan_layouts(shape, h100, work, gpus=16384, top=10_000, include_unfit=True))
    print(f"  candidate layouts costed at 16,384 GPUs: {candidates}")


if __name__ == "__main__":
    main()
