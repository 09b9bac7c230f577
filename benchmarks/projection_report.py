"""The numbers and plots of docs/projection.md and docs/benchmarks/projection.md, regenerated.

Prints (markdown tables):
1. the validation against Llama 3 405B (paper table 4), under both attention conventions;
2. which terms matter: the Llama rows with one assumption changed at a time;
3. secondary checks against NVIDIA's published Megatron-Bridge tables (recipes as published);
4. the B200 scaling curves of llama3-405b and llama3-70b, 8..16384 GPUs, bf16 and fp8;
5. the answer for 10,000 B200.
and writes the PNGs under docs/benchmarks/. Everything here is a projection of the cost model,
not a measurement.

    python benchmarks/projection_report.py                 # tables to stdout, PNGs to docs/benchmarks/
    python benchmarks/projection_report.py --no-plots
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from harness.hardware import profiles
from harness.perf.assumptions import DEFAULT, Assumptions
from harness.perf.device import Device, device_from_profile
from harness.perf.layout import Layout
from harness.perf.plots import breakdown_png, sustained_png
from harness.perf.project import project, summary_line
from harness.perf.shape import ModelShape, shape_from_mapping
from harness.perf.step import StepEstimate, estimate_step
from harness.perf.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks"
LLAMA3_405B_TABLE4 = [  # gpus, tp, cp, pp, dp, seq, sequences per step, TFLOP/s per GPU, MFU
    (8192, 8, 1, 16, 64, 8192, 2048, 430, 0.43),
    (16384, 8, 1, 16, 128, 8192, 2048, 400, 0.41),
    (16384, 8, 16, 16, 8, 131072, 128, 380, 0.38),
]
MEGATRON_BRIDGE = [  # NVIDIA Megatron-Bridge docs/performance-summary(-archive).md, model TFLOP/s (causal)
    # name, hardware, model, gpus, tp, pp, cp, vp, global batch, micro-batch, dtype, published
    ("25.09 DGX-H100", "h100-sxm", "llama3-70b", 64, 4, 8, 1, 5, 128, 1, "float8", 727),
    ("25.09 DGX-H100", "h100-sxm", "llama3-405b", 1024, 8, 8, 2, 8, 512, 1, "float8", 763),
    ("26.02 DGX-H100", "h100-sxm", "llama3-405b", 1024, 8, 8, 2, 8, 1536, 1, "float8", 784),
    ("25.09 DGX-B200", "b200", "llama3-405b", 128, 4, 8, 2, 8, 64, 1, "float8", 1676),
    ("26.02 DGX-GB200", "gb200", "llama3-405b", 256, 4, 16, 1, 4, 1536, 1, "float8", 2004),
]
MEGATRON = dataclasses.replace(DEFAULT, fused_elementwise=True, fused_grad_accumulation=True)
"""Megatron-LM with Transformer Engine fuses the element-wise ops and the fp32 gradient accumulation."""


def model_shape(name: str) -> ModelShape:
    data = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "model" / f"{name}.yaml"))
    assert isinstance(data, dict)
    return shape_from_mapping(data)


def device(name: str) -> Device:
    return device_from_profile(profiles()[name])


def llama_row(row: tuple, assumptions: Assumptions = DEFAULT, dev: Device | None = None) -> StepEstimate:
    gpus, tp, cp, pp, dp, seq, batch, _, _ = row
    layout = Layout(tp=tp, cp=cp, pp=pp, dp_shard=dp, pp_schedule="interleaved_1f1b", pp_virtual_stages=8)
    layout = layout.resolve(gpus, global_batch=batch)
    return estimate_step(model_shape("llama3-405b"), layout, Workload(seq_len=seq, global_batch=batch),
                         dev or device("h100-sxm"), assumptions=assumptions)  # fmt: skip


def validation() -> None:
    print("\n## Llama 3 405B, H100 (paper table 4)\n")
    print("| GPUs | TP×CP×PP×DP | seq | m | paper TFLOP/s | causal (6N'+6LHQT) | err | non-causal (6N'+12LHQT) | err "
          "| step s | memory GiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    errors: dict[str, list[float]] = {"causal": [], "non": []}
    for row in LLAMA3_405B_TABLE4:
        est = llama_row(row)
        paper = row[7]
        c, n = est.tflops_per_device_causal, est.tflops_per_device
        errors["causal"].append(c / paper - 1)
        errors["non"].append(n / paper - 1)
        lay = est.layout
        print(f"| {row[0]:,} | {lay.tp}×{lay.cp}×{lay.pp}×{lay.dp} | {row[5]:,} | {lay.pp_microbatches} | {paper} | "
              f"{c:.0f} | {c / paper - 1:+.1%} | {n:.0f} | {n / paper - 1:+.1%} | {est.step_time_s:.2f} | "
              f"{est.memory.total_bytes / 2**30:.1f} |")  # fmt: skip
    for key, label in (("causal", "causal"), ("non", "non-causal")):
        values = [abs(e) for e in errors[key]]
        print(f"\n{label}: median |error| {statistics.median(values):.1%}, max {max(values):.1%}")
    print("\nBreakdown (share of the step):\n")
    print("| GPUs | seq | compute | TP | CP | bubble | PP send | DP exposed | optimizer | straggler ×|")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in LLAMA3_405B_TABLE4:
        est = llama_row(row)
        shares = " | ".join(f"{100 * v / est.step_time_s:.1f} %" for v in est.breakdown().values())
        print(f"| {row[0]:,} | {row[5]:,} | {shares} | {est.straggler_factor:.3f} |")


SENSITIVITY = [
    ("as documented", {}),
    ("no straggler stretch (σ = 0)", {"gpu_speed_sigma": 0.0}),
    ("TP collectives fully hidden", {"tp_overlap": 1.0}),
    ("fused element-wise kernels", {"fused_elementwise": True}),
    ("fused fp32 gradient accumulation", {"fused_grad_accumulation": True}),
    ("pipeline sends fully hidden", {"pp_p2p_overlap": 1.0}),
    ("FSDP fully hidden", {"dp_overlap": 1.0}),
    ("FlashAttention-2-class attention (0.42/0.40 of the GEMM ceiling)",
     {"attention_fwd_vs_gemm": 0.42, "attention_bwd_vs_gemm": 0.40}),
]  # fmt: skip


def sensitivity() -> None:
    print("\n## Which terms matter: Llama 3 rows, causal TFLOP/s, one assumption changed\n")
    print("| change | 8,192 × 8K | 16,384 × 8K | 16,384 × 128K (CP 16) | median |error| |")
    print("|---|---|---|---|---|")
    for label, change in [*SENSITIVITY, ("no wave quantization", None)]:
        cells, errs = [], []
        for row in LLAMA3_405B_TABLE4:
            if change is None:
                est = llama_row(row, dev=dataclasses.replace(device("h100-sxm"), sm_count=None))
            else:
                est = llama_row(row, dataclasses.replace(DEFAULT, **change))
            err = est.tflops_per_device_causal / row[7] - 1
            errs.append(abs(err))
            cells.append(f"{est.tflops_per_device_causal:.0f} ({err:+.1%})")
        print(f"| {label} | {' | '.join(cells)} | {statistics.median(errs):.1%} |")


def megatron() -> None:
    print("\n## Secondary: NVIDIA Megatron-Bridge published FP8 rows (model TFLOP/s, causal)\n")
    print("| release, system | model | GPUs | TP×PP×CP, VP | GBS | published | projected | err | fits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, hw, model, gpus, tp, pp, cp, vp, gbs, mbs, dtype, published in MEGATRON_BRIDGE:
        schedule = "interleaved_1f1b" if vp > 1 else "1f1b"
        layout = Layout(tp=tp, pp=pp, cp=cp, pp_schedule=schedule, pp_virtual_stages=vp).resolve(
            gpus, global_batch=gbs, micro_batch=mbs)  # fmt: skip
        est = estimate_step(model_shape(model), layout, Workload(8192, gbs, mbs, dtype), device(hw),
                            gpus_per_node=4 if hw == "gb200" else 8, assumptions=MEGATRON)  # fmt: skip
        c = est.tflops_per_device_causal
        print(f"| {name} | {model} | {gpus:,} | {tp}×{pp}×{cp}, {vp} | {gbs:,} | {published} | {c:.0f} | "
              f"{c / published - 1:+.1%} | {'yes' if est.fits else 'no'} |")  # fmt: skip


def curves(plots: bool) -> None:
    b200 = device("b200")
    print("\n## B200 scaling, seq 8192, 2,048 sequences per step, best layout per count\n")
    all_rows = {}
    for dtype in ("bfloat16", "float8"):
        rows = []
        for model in ("llama3-405b", "llama3-70b"):
            work = Workload(seq_len=8192, global_batch=2048, dtype=dtype)
            series = project(model_shape(model), b200, work, "8..16384x2", model=model)
            rows += series
            all_rows[(model, dtype)] = series
            print(f"\n### {model}, {dtype}\n")
            print("| GPUs | layout | AC | TFLOP/s/GPU | MFU | PFLOP/s | step s | GiB/GPU | fits |")
            print("|---|---|---|---|---|---|---|---|---|")
            for r in series:
                sched = ""
                if r["pp"] > 1:
                    v = f" v{r['pp_virtual_stages']}" if r["pp_schedule"] == "interleaved_1f1b" else ""
                    sched = f" {r['pp_schedule'].replace('_1f1b', '')}{v} m{r['pp_microbatches']}"
                step = f"{r['step_time_s']:,.0f}" if r["step_time_s"] >= 100 else f"{r['step_time_s']:.3g}"
                print(f"| {r['gpus_requested']:,} | {r['tp']}×{r['cp']}×{r['pp']}×{r['dp_shard'] * r['dp_replicate']}"
                      f"{sched} | {'on' if r['activation_checkpointing'] else 'off'} | {r['tflops_per_device']:.0f} | "
                      f"{r['mfu']:.1%} | {r['aggregate_pflops']:,.0f} | {step} | "
                      f"{r['memory_per_device_bytes'] / 2**30:.0f} | {'yes' if r['fits'] else 'no'} |")  # fmt: skip
        if plots:
            short = {"bfloat16": "bf16", "float8": "fp8"}[dtype]
            (OUT / f"projection-b200-{short}.png").write_bytes(
                sustained_png(
                    rows, title=f"Projected sustained {short} PFLOP/s on B200, Llama 3 (seq 8192, 2,048 sequences/step)"
                )
            )
    if plots:
        for model in ("llama3-405b", "llama3-70b"):
            (OUT / f"projection-b200-{model}-breakdown.png").write_bytes(
                breakdown_png(
                    all_rows[(model, "bfloat16")], title=f"{model} on B200, bf16: where the projected step goes"
                )
            )


def answer() -> None:
    b200 = device("b200")
    print("\n## 10,000 B200\n")
    for model in ("llama3-70b", "llama3-405b"):
        for dtype in ("bfloat16", "float8"):
            for batch in (2048, 2500):
                (row,) = project(model_shape(model), b200, Workload(8192, batch, dtype=dtype), [10000], model=model)
                print(f"- {model}, {batch:,} sequences/step: {summary_line(row)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    validation()
    sensitivity()
    megatron()
    curves(not args.no_plots)
    answer()


if __name__ == "__main__":
    main()
