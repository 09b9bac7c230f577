"""Training throughput of `harness train` against a bare loop of the same engine (goal: >= 0.97).

For each engine, side by side and alternating trial by trial: `harness train` (its own launcher,
2 CPU ranks) and a bare loop of that engine written with no harness code (torch.multiprocessing,
gloo), on the same model, batch, data, optimizer and schedule:

- ddp:       bare torch DistributedDataParallel;
- fsdp:      bare FSDP2 (fully_shard per block, then the root);
- deepspeed: bare deepspeed.initialize with the very JSON config the harness generates.

Each side's figure is the median over its steps after warmup; the table gives the median over
trials and harness/bare. The bare loops check their losses are finite before their speed counts.
`--deterministic` also times each bare loop under torch.use_deterministic_algorithms(True), and
`--profile` prints the ops whose time grows most under it (the DeepSpeed finding of issue #9).

`--layouts` instead times `harness train engine=fsdp` in the parallel layouts of issue 13 at 4 CPU
ranks (dp_shard 4; tp 2 × dp_shard 2; pp 2 × dp_shard 2 with 1F1B and interleaved 1F1B; cp 2 ×
dp_shard 2) on one global batch: tokens/s and step time (medians after warmup), the pipeline
bubble, and whether every layout's losses match the first one's (the correctness gate). On two
CPU cores these are figures for the record, not speed claims.

    python benchmarks/train_throughput.py                      # small, 3 engines, 3 trials
    python benchmarks/train_throughput.py --engines deepspeed --deterministic --profile
    python benchmarks/train_throughput.py --layouts --trials 1 --steps 15 --micro-batch 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.config.compose import compose
from harness.config.job import typed
from harness.dist import free_port
from harness.train.data import BatchSpec, SyntheticData, first_index
from harness.train.engines.base import adamw, lr_at
from harness.train.engines.deepspeed import deepspeed_config
from harness.train.model import Transformer
from harness.train.task import model_shape

WARMUP = 5
ENGINE_ARGS = {"ddp": ["engine=ddp"], "fsdp": ["engine=fsdp"], "deepspeed": ["engine=deepspeed", "engine.zero_stage=2"]}


def overrides(args: argparse.Namespace) -> list[str]:
    return [f"model={args.model}", f"train.steps={args.steps}", f"train.micro_batch={args.micro_batch}",
            f"train.seq_len={args.seq_len}", f"train.warmup_steps={WARMUP}"]  # fmt: skip


def harness_tokens_per_s(args: argparse.Namespace, engine: str, results: Path) -> float:
    cmd = [sys.executable, "-m", "harness", "train", *overrides(args), *ENGINE_ARGS[engine], "launch.nproc=2",
           f"results.dir={results}", f"train.ckpt_dir={results}/ck-{engine}", "train.resume=never"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    (summary,) = [r for r in rows if r["kind"] == "train_summary"]
    return summary["tokens_per_s"]


def _bare_model(engine: str, cfg, rank: int):
    torch.manual_seed(cfg.train.seed)
    module = Transformer(model_shape(cfg))
    if engine == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(module)
        return model, module, adamw(module.parameters(), cfg.train)
    if engine == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh("cpu", (2,))
        policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
        for block in module.layers:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        model = fully_shard(module, mesh=mesh, mp_policy=policy)
        return model, model, adamw(model.parameters(), cfg.train)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    config = deepspeed_config(cfg.train, cfg.engine, cfg.train.micro_batch, 1, 2)  # the harness's own JSON
    engine_, optimizer, _, _ = deepspeed.initialize(model=module, optimizer=adamw(module.parameters(), cfg.train),
                                                    config=config, dist_init_required=False)  # fmt: skip
    return engine_, module, optimizer


def bare_worker(rank: int, args: argparse.Namespace, engine: str, deterministic: bool, profile: bool, port: int,
                out: str) -> None:  # fmt: skip
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cfg = typed(compose(["task=train", *overrides(args), *ENGINE_ARGS[engine]]))
    if deterministic:
        torch.use_deterministic_algorithms(True)
        # --no-fill: deterministic algorithms, without NaN-filling every freshly allocated tensor
        torch.utils.deterministic.fill_uninitialized_memory = not args.no_fill
    model, module, optimizer = _bare_model(engine, cfg, rank)
    data = SyntheticData(BatchSpec(args.micro_batch, args.seq_len, cfg.model.vocab_size, cfg.train.seed))
    times, losses = [], []
    profiler = None
    for step in range(1, args.steps + 1):
        x, y = data.batch(step, first_index(dp_rank=rank, micro=0, micro_batch=args.micro_batch, accumulation=1))
        if profile and step == WARMUP + 1:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.train)
        loss = model(x, y)
        if engine == "deepspeed":
            model.backward(loss)
            model.step()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters() if engine == "ddp" else model.parameters(),
                                           cfg.train.grad_clip)  # fmt: skip
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        elapsed = torch.tensor([time.perf_counter() - start])
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        times.append(float(elapsed))
        losses.append(float(loss.detach()))
    if profiler is not None:
        profiler.__exit__(None, None, None)
    if rank == 0:
        assert all(v == v and abs(v) < 1e6 for v in losses), "bare loop diverged"
        result = {"tokens_per_s": 2 * args.micro_batch * args.seq_len / statistics.median(times[WARMUP:])}
        if profiler is not None:
            result["profile"] = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        Path(out).write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def bare_tokens_per_s(args: argparse.Namespace, engine: str, tmp: str, deterministic: bool = False,
                      profile: bool = False) -> dict:  # fmt: skip
    out = f"{tmp}/bare-{engine}-{deterministic}.json"
    mp.spawn(bare_worker, args=(args, engine, deterministic, profile, free_port(), out), nprocs=2, join=True)
    return json.loads(Path(out).read_text())


LAYOUTS = [
    ("dp_shard 4", ["parallel.dp_shard=4"]),
    ("tp 2 × dp_shard 2", ["parallel.tp=2", "parallel.dp_shard=2"]),
    ("pp 2 × dp_shard 2, 1f1b", ["parallel.pp=2", "parallel.dp_shard=2"]),
    ("pp 2 × dp_shard 2, interleaved v 2", ["parallel.pp=2", "parallel.dp_shard=2",
                                           "parallel.pp_schedule=interleaved_1f1b"]),
    ("cp 2 × dp_shard 2", ["parallel.cp=2", "parallel.dp_shard=2"]),
]  # fmt: skip
"""The layouts of `--layouts`, at 4 ranks (issue 13)."""


def layout_run(args: argparse.Namespace, extra: list[str], results: Path) -> dict:
    """One `harness train engine=fsdp` run at 4 ranks in a layout: its summary row and losses."""
    cmd = [sys.executable, "-m", "harness", "train", *overrides(args), "engine=fsdp", "launch.nproc=4",
           f"train.global_batch={args.global_batch}", *extra, f"results.dir={results}",
           f"train.ckpt_dir={results}/ck", "train.resume=never"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    (summary,) = [r for r in rows if r["kind"] == "train_summary"]
    return {"summary": summary, "losses": [r["loss"] for r in rows if r["kind"] == "train"]}


def layouts_main(args: argparse.Namespace) -> None:
    """--layouts: tokens/s and bubble of each layout at 4 CPU ranks, losses checked against the first."""
    found: dict[str, list[dict]] = {name: [] for name, _ in LAYOUTS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.trials):
            for name, extra in LAYOUTS:  # layouts alternate trial by trial: drift hits all alike
                found[name].append(layout_run(args, extra, Path(tmp)))
    reference = found[LAYOUTS[0][0]][0]["losses"]
    print(f"model {args.model}, 4 CPU ranks on {os.cpu_count()} cores (gloo), engine=fsdp, global batch "
          f"{args.global_batch} x seq {args.seq_len}, micro-batch {args.micro_batch}, {args.steps} steps (median "
          f"after {WARMUP} warmup steps), median of {args.trials} trial(s); CPU figures for the record")  # fmt: skip
    print(f"| {'layout':<34} | {'tokens/s':>9} | {'step ms':>8} | {'bubble':>7} | losses = dp_shard 4 (1e-4) |")
    print(f"|{'-' * 36}|{'-' * 10}:|{'-' * 9}:|{'-' * 8}:|{'-' * 28}|")
    for name, runs in found.items():
        tokens = statistics.median(r["summary"]["tokens_per_s"] for r in runs)
        step_ms = statistics.median(r["summary"]["step_time_s"] for r in runs) * 1e3
        bubble = runs[0]["summary"]["pipeline_bubble"]
        same = all(r["summary"]["passed"] and len(r["losses"]) == len(reference)
                   and all(abs(a - b) <= 1e-4 * abs(b) for a, b in zip(r["losses"], reference, strict=True))
                   for r in runs)  # fmt: skip
        print(f"| {name:<34} | {tokens:>9,.0f} | {step_ms:>8,.0f} | {bubble:>7.1%} | {'yes' if same else 'NO':<26} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small")
    parser.add_argument("--engines", default="ddp,fsdp,deepspeed")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--deterministic", action="store_true", help="also time the bare loops deterministic")
    parser.add_argument("--profile", action="store_true", help="with --deterministic: the ops that cost most")
    parser.add_argument(
        "--no-fill",
        action="store_true",
        help="with --deterministic: keep torch.utils.deterministic.fill_uninitialized_memory off",
    )
    parser.add_argument("--layouts", action="store_true", help="time the parallel layouts at 4 ranks instead")
    parser.add_argument("--global-batch", type=int, default=16, help="with --layouts: sequences per step")
    args = parser.parse_args()
    if args.layouts:
        layouts_main(args)
        return
    engines = [e for e in args.engines.split(",") if e]
    results: dict[str, dict[str, list[float]]] = {e: {"harness": [], "bare": [], "bare_det": []} for e in engines}
    profiles: dict[tuple[str, bool], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(args.trials):
            for engine in engines:  # alternate sides and engines trial by trial: drift hits all alike
                results[engine]["bare"].append(bare_tokens_per_s(args, engine, tmp)["tokens_per_s"])
                results[engine]["harness"].append(harness_tokens_per_s(args, engine, Path(tmp)))
                if args.deterministic:
                    det = bare_tokens_per_s(args, engine, tmp, deterministic=True)
                    results[engine]["bare_det"].append(det["tokens_per_s"])
                    if args.profile and trial == 0:
                        for flag in (True, False):
                            found = bare_tokens_per_s(args, engine, tmp, deterministic=flag, profile=True)
                            profiles[(engine, flag)] = found.get("profile", "")
    print(f"model {args.model}, 2 CPU ranks (gloo), micro-batch {args.micro_batch} x seq {args.seq_len}, "
          f"{args.steps} steps (median after {WARMUP} warmup steps), median of {args.trials} trials")  # fmt: skip
    print(f"{'engine':<12} {'bare tok/s':>11} {'harness tok/s':>14} {'harness/bare':>13} {'trial ratios':>20}"
          + (f" {'bare deterministic':>19} {'slowdown':>9}" if args.deterministic else ""))  # fmt: skip
    for engine, r in results.items():
        bare, harness = statistics.median(r["bare"]), statistics.median(r["harness"])
        # each trial's harness/bare: the spread says how far one trial's figure can be trusted
        ratios = [h / b for h, b in zip(r["harness"], r["bare"], strict=True)]
        spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
        line = f"{engine:<12} {bare:>11,.0f} {harness:>14,.0f} {harness / bare:>13.3f} {spread:>20}"
        if args.deterministic:
            det = statistics.median(r["bare_det"])
            line += f" {det:>19,.0f} {bare / det:>8.1f}x"
        print(line)
    for (engine, deterministic), table in profiles.items():
        print(f"\n{engine}, deterministic={deterministic}: top ops by self CPU time (the steps after warmup)\n{table}")


if __name__ == "__main__":
    main()
