"""Training throughput through the harness against a bare PyTorch DDP loop (goal: >= 0.97).

In one run: `harness train model=small` for N steps on 2 CPU ranks with DeepSpeed ZeRO-2 and with
DDP, and a bare DDP loop of the same model, batch, optimizer and steps (torch.multiprocessing,
no harness code in the loop). Each side's tokens/s is the median over the steps after warmup;
the bare loop checks that its loss stays finite before its speed counts.

    python benchmarks/train_throughput.py                # small, 30 steps, micro-batch 4, seq 128
    python benchmarks/train_throughput.py --steps 50 --seq-len 256
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

from harness.config import compose, to_typed
from harness.dist import free_port
from harness.train.data import BatchSpec, SyntheticData
from harness.train.engines.base import adamw, lr_at
from harness.train.model import Transformer
from harness.train.task import model_shape


def harness_tokens_per_s(args: argparse.Namespace, engine: list[str], results: Path) -> float:
    cmd = [sys.executable, "-m", "harness", "train", "model=small", f"train.steps={args.steps}", "launch.nproc=2",
           f"train.micro_batch={args.micro_batch}", f"train.seq_len={args.seq_len}", "train.warmup_steps=5",
           f"results.dir={results}", f"train.ckpt_dir={results}/ck-{len(engine)}", "train.resume=never",
           *engine]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    (summary,) = [r for r in rows if r["bench"] == "train_summary"]
    return summary["tokens_per_s"]


def bare_worker(rank: int, args: argparse.Namespace, port: int, out: str) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=rank == 0)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    cfg = to_typed(compose(["task=train", "model=small", f"train.steps={args.steps}", "train.warmup_steps=5"]))
    torch.manual_seed(0)
    module = Transformer(model_shape(cfg))
    model = torch.nn.parallel.DistributedDataParallel(module)
    optimizer = adamw(module.parameters(), cfg.train)
    data = SyntheticData(BatchSpec(args.micro_batch, args.seq_len, cfg.model.vocab_size, 0))
    times, losses = [], []
    for step in range(1, args.steps + 1):
        x, y = data.batch(step, 0, rank)
        start = time.perf_counter()
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.train.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.train)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = torch.tensor([time.perf_counter() - start])
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        times.append(float(elapsed))
        losses.append(float(loss.detach()))
    if rank == 0:
        assert all(v == v and abs(v) < 1e6 for v in losses), "bare loop diverged"
        tokens = 2 * args.micro_batch * args.seq_len
        Path(out).write_text(json.dumps({"tokens_per_s": tokens / statistics.median(times[5:])}))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare_file = f"{tmp}/bare.json"
        mp.spawn(bare_worker, args=(args, free_port(), bare_file), nprocs=2, join=True)
        bare = json.loads(Path(bare_file).read_text())["tokens_per_s"]
        ddp = harness_tokens_per_s(args, ["engine=ddp"], Path(tmp))
        zero2 = harness_tokens_per_s(args, ["engine=deepspeed", "engine.zero_stage=2"], Path(tmp))
    print(f"model small, 2 CPU ranks, micro-batch {args.micro_batch} x seq {args.seq_len}, {args.steps} steps "
          f"(median after 5 warmup steps)")  # fmt: skip
    print(f"{'run':<34} {'tokens/s':>10} {'vs bare DDP':>12}")
    for label, value in (("bare PyTorch DDP loop", bare), ("harness train engine=ddp", ddp),
                         ("harness train deepspeed ZeRO-2", zero2)):  # fmt: skip
        print(f"{label:<34} {value:>10,.0f} {value / bare:>12.3f}")


if __name__ == "__main__":
    main()
