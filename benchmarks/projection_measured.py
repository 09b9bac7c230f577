"""The projection's "measured here" validation (issue 15): calibrate on 2-rank runs of this
machine, then predict what the fit did not see, through the real command line.

1. Measure (each a real `harness` run, results under --out):
   - `harness bench gemm` on 2 ranks (float32, shapes spanning the model's GEMMs);
   - `harness bench all_reduce,all_gather,reduce_scatter` on 2 ranks at 64K, 256K, ... 64M (the fit);
   - the same at 128K, 512K, ... 32M, twice (held out: sizes the fit does not see; the second
     measurement of the same sizes gives the measurement's own run-to-run spread, the floor
     under any prediction error);
   - `harness train model=small` on 1 rank (DDP, the fit), then on 2 ranks with DDP and with
     FSDP (held out), the same global batch.
2. `harness project model=small hardware=cpu ... project.calibrate=[gemm, fit sizes, 1-rank train]
   project.check=[held-out sizes twice, DDP 2 ranks, FSDP 2 ranks]`, then a markdown table of the
   errors (predicted / measured − 1; goal |error| ≤ 15 %) by op and size band, beside the spread.

Two CPU cores: each of 2 ranks runs 1 thread. The 1-rank run runs under mpiexec with
OMP_NUM_THREADS=1 by default (the harness's own launcher would give it both cores: `--one-rank
local`, which the model follows by taking compute time as inversely proportional to the
threads, docs/projection.md; a 2-thread run collapses when anything else wants a core). Other
work on the machine moves every figure: the load average is printed before and after; run it on
an idle machine and more than once.

    python benchmarks/projection_measured.py                      # about 5 minutes
    python benchmarks/projection_measured.py --steps 20 --out /tmp/measured
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from harness.results import read_rows

ROOT = Path(__file__).resolve().parents[1]
GEMM_SHAPES = "[256x256x256,512x512x512,1024x384x384,1024x1024x384,1024x2048x384,1024x8192x384]"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
BAND_BYTES = 4 * 2**20
"""Below this a 2-rank CPU collective is latency-bound (and most exposed to scheduling noise)."""


def harness(*args: str, out: Path, launcher: tuple[str, ...] = (), threads: int | None = None) -> Path:
    """Run `harness ARGS results.dir=OUT` (under `launcher`, with OMP_NUM_THREADS=`threads`); its
    run directory (exit on failure, printing why)."""
    cmd = [*launcher, sys.executable, "-m", "harness", *args, f"results.dir={out}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    shown = " ".join(launcher) + (" " if launcher else "")
    print(f"$ {f'OMP_NUM_THREADS={threads} ' if threads else ''}{shown}harness " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines or not lines[-1].startswith("results: "):
        sys.exit(f"failed ({proc.returncode}): {proc.stderr.strip() or lines[-1:]}")
    return Path(lines[-1].removeprefix("results: ").strip())


def measure(out: Path, args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The runs to calibrate on and the held-out runs."""
    collectives = ("bench", "all_reduce,all_gather,reduce_scatter", "launch.nproc=2", "bench.step_factor=4",
                   f"bench.warmup={args.warmup}", f"bench.iters={args.iters}")  # fmt: skip
    gemm = harness("bench", "gemm", "launch.nproc=2", "bench.dtype=float32", f"bench.shapes={GEMM_SHAPES}", out=out)
    fit = harness(*collectives, "bench.min_bytes=64K", "bench.max_bytes=64M", out=out)
    held = [harness(*collectives, "bench.min_bytes=128K", "bench.max_bytes=32M", out=out) for _ in range(2)]
    train = ("train", "model=small", f"train.steps={args.steps}", f"train.seq_len={args.seq_len}",
             f"train.micro_batch={args.micro_batch}", f"train.global_batch={args.global_batch}", "train.resume=never",
             f"train.ckpt_dir={out}/ckpt")  # fmt: skip
    if args.one_rank == "mpi":  # 1 rank, 1 thread: the harness's own launcher would give it both cores
        one = harness(*train, "engine=ddp", out=out, launcher=(MPIEXEC, "-n", "1"), threads=1)
    else:
        one = harness(*train, "engine=ddp", "launch.nproc=1", out=out)
    ddp = harness(*train, "engine=ddp", "launch.nproc=2", out=out)
    fsdp = harness(*train, "engine=fsdp", "launch.nproc=2", out=out)
    return [gemm, fit, one], [*held, ddp, fsdp]


def _band(size: int) -> str:
    return f"< {BAND_BYTES >> 20} MiB" if size < BAND_BYTES else f"≥ {BAND_BYTES >> 20} MiB"


def _pct(values: Iterable[float]) -> str:
    values = [abs(v) for v in values]
    return f"{100 * statistics.median(values):.1f} % / {100 * max(values):.1f} %" if values else "-"


def report(project_run: Path, held: list[Path]) -> None:
    """Markdown: collective errors by op and size band beside the measurement's own spread, and the
    train predictions."""
    rows = [r for r in read_rows(project_run) if r.get("kind") == "prediction"]
    first, second = ({(r["kind"], r["bytes"], r["in_place"]): r["busbw_gbps"] for r in read_rows(run)} for run in held)
    print("\n| op | sizes | figures | prediction error, median / max | same sizes measured twice, median / max |")
    print("|---|---|---|---|---|")
    for op in ("all_reduce", "all_gather", "reduce_scatter"):
        for band in (_band(0), _band(BAND_BYTES)):
            errors = [r["error"] for r in rows if r["of"] == op and _band(r["bytes"]) == band]
            spread = [first[k] / second[k] - 1 for k in first if k[0] == op and _band(k[1]) == band and k in second]
            print(f"| {op} | {band} | {len(errors)} | {_pct(errors)} | {_pct(spread)} |")
    print("\n| held-out train run | measured step | predicted | error |")
    print("|---|---|---|---|")
    for r in rows:
        if r["of"] == "train":
            print(f"| {r['engine']}, {r['world_size']} ranks | {r['measured']:.3f} s | {r['predicted']:.3f} s | "
                  f"{100 * r['error']:+.1f} % |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="results dir (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=14, help="train steps per run (2 warm-up steps not counted)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=40, help="collective iterations per size")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--one-rank", choices=("mpi", "local"), default="mpi" if Path(MPIEXEC).exists() else "local",
                        help="the 1-rank train run: under mpiexec with 1 thread (default where the venv has MPI), "
                        "or the harness's launcher (2 threads on 2 cores)")  # fmt: skip
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    out = args.out or Path(tempfile.mkdtemp(prefix="projection-measured-"))
    calibrate, check = measure(out, args)
    cmd = ["project", "model=small", "hardware=cpu", "cluster.gpus=[1,2]", "cluster.gpus_per_node=2",
           f"train.seq_len={args.seq_len}", f"train.micro_batch={args.micro_batch}",
           f"train.global_batch={args.global_batch}", f"project.calibrate=[{','.join(map(str, calibrate))}]",
           f"project.check=[{','.join(map(str, check))}]"]  # fmt: skip
    project_run = harness(*cmd, out=out)
    print((project_run / "console.log").read_text(), end="")
    report(project_run, check[:2])
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
