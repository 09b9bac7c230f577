"""Parallel layouts without processes (issue 13): every bad layout is refused before a rank starts
(exit 2, one line with the arithmetic); the pieces of the layouts by hand: context-parallel
chunks, pipeline stages, name-keyed weights, the mesh record, the bubble, the gradient norm."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from harness import cli
from harness.config.compose import compose
from harness.config.job import typed
from harness.perf.layout import Layout
from harness.train import checkpoint
from harness.train.context_parallel import chunk_positions, shard_sequence, unshard_order
from harness.train.engines.fsdp import by_mesh, total_grad_norm
from harness.train.mesh import mesh_record
from harness.train.model import Transformer, init_weights, materialize
from harness.train.pipeline import cut, stage_ids, stage_ranges
from harness.train.task import model_shape
from harness.train.trainer import StepFigures, summary_row
from tests.helpers import prepare

TINY4 = ["model.n_layers=4", "train.global_batch=4", "train.micro_batch=1", "train.seq_len=32"]

BAD = [
    (["launch.nproc=4", "parallel.tp=2", "parallel.dp_shard=3"], "= 6 ≠ world size 4"),
    (["launch.nproc=3", "parallel.tp=2"], "parallel.dp_shard=-1 (what is left): 3 GPUs / (dp_replicate 1 × tp 2"),
    (["launch.nproc=3", "parallel.tp=3", "train.global_batch=3"], "parallel.tp=3 does not divide model.n_heads=4"),
    (["launch.nproc=2", "parallel.tp=2", "model.ffn_dim=351"], "parallel.tp=2 does not divide model.ffn_dim=351"),
    (["launch.nproc=2", "parallel.tp=2", "model.vocab_size=255"], "parallel.tp=2 does not divide model.vocab_size=255"),
    (["launch.nproc=4", "parallel.tp=4"], "each KV head would be replicated on 2 TP ranks, which this trainer"),
    (["launch.nproc=4", "parallel.pp=4", "model.n_layers=2"], "= 4 stages > model.n_layers=2"),
    (["launch.nproc=2", "parallel.pp=2", "parallel.pp_schedule=interleaved_1f1b", "model.n_layers=2"],
     "parallel.pp × pp_virtual_stages = 2 × 2 = 4 stages > model.n_layers=2"),
    (["launch.nproc=2", "parallel.pp=2", "train.global_batch=1"], "parallel.pp_microbatches=1 < parallel.pp=2"),
    (["launch.nproc=2", "parallel.pp=2", "parallel.pp_schedule=interleaved_1f1b", "train.global_batch=3"],
     "parallel.pp_microbatches=3 is not a multiple of parallel.pp=2"),
    (["launch.nproc=2", "parallel.pp=2", "parallel.pp_microbatches=8"],
     "parallel.pp_microbatches=8 × dp 1 × micro_batch 1 = 8 ≠ train.global_batch=4"),
    (["launch.nproc=2", "parallel.pp=2", "parallel.pp_virtual_stages=2"],
     "parallel.pp_virtual_stages=2 needs parallel.pp_schedule=interleaved_1f1b"),
    (["launch.nproc=2", "parallel.pp=2", "parallel.pp_schedule=zero_bubble"], "parallel.pp_schedule='zero_bubble'"),
    (["launch.nproc=2", "parallel.cp=2", "train.seq_len=30"], "train.seq_len=30 is not divisible by 2 × parallel.cp"),
    (["launch.nproc=2", "parallel.tp=2", "train.seq_len=33"], "= 33 tokens is not divisible by parallel.tp=2"),
    (["launch.nproc=2", "parallel.dp_shard=2", "train.global_batch=5"],
     "train.global_batch=5 is not a multiple of train.micro_batch x data-parallel ranks = 1 x 2 = 2"),
    (["launch.nproc=2", "parallel.tp=0"], "parallel.tp=0: must be a whole number ≥ 1"),
    (["launch.nproc=2", "parallel.pp=2", "model.tied_embeddings=true"],
     "model.tied_embeddings=true with parallel.pp=2: the embedding (first stage)"),
    (["launch.nproc=2", "engine=deepspeed", "parallel.tp=2"], "engine=deepspeed is data-parallel only (parallel.tp=2)"),
    (["launch.nproc=4", "engine=ddp", "parallel.dp_replicate=2"],
     "engine=ddp is data-parallel only (parallel.dp_replicate=2): use engine=fsdp"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_layout_exits_2_before_any_rank(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    results = tmp_path / "results"
    engine = [] if any(a.startswith("engine=") for a in argv) else ["engine=fsdp"]
    code = cli.run(["train", *engine, *TINY4, *argv, f"results.dir={results}", f"train.ckpt_dir={tmp_path}/ck"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not results.exists() or list(results.iterdir()) == []  # nothing started


def test_a_good_layout_plans_its_defaults(tmp_path: Path) -> None:
    job = prepare(["task=train", "engine=fsdp", *TINY4, "launch.nproc=8", "parallel.tp=2", "parallel.pp=2",
                   f"results.dir={tmp_path}", f"train.ckpt_dir={tmp_path}/ck"])  # fmt: skip
    layout = job.plan.layout
    assert (layout.dp_shard, layout.pp_microbatches, layout.pp_virtual_stages, layout.sequence_parallel) == (
        2, 2, 1, True,
    )  # fmt: skip
    assert layout.describe() == "TP 2 × PP 2 (1f1b, m 2) × DP 2"


def test_dry_run_records_the_layout(tmp_path: Path) -> None:
    job = prepare(["task=train", "engine=fsdp", "model=llama3-405b", "train.dry_run=true", "launch.nproc=16384",
                   "parallel.tp=8", "parallel.pp=16", "train.seq_len=8192", "train.micro_batch=1",
                   "train.global_batch=2048", "parallel.pp_schedule=interleaved_1f1b",
                   f"results.dir={tmp_path}"])  # fmt: skip
    layout = job.plan.layout
    assert (layout.dp_shard, layout.pp_microbatches) == (128, 16)
    # a TP group larger than a node is refused when planning for the cluster
    with pytest.raises(Exception, match="TP groups must stay inside a node"):
        prepare(["task=train", "engine=fsdp", "model=llama3-405b", "train.dry_run=true", "launch.nproc=16384",
                 "parallel.tp=16", "cluster.gpus_per_node=8", f"results.dir={tmp_path}"])  # fmt: skip


def test_context_parallel_chunks_balance_the_causal_work() -> None:
    # seq 8 over cp 2: chunks of 2; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2
    assert chunk_positions(4, 0, 2).tolist() == [0, 1, 6, 7]
    assert chunk_positions(4, 1, 2).tolist() == [2, 3, 4, 5]
    tokens = torch.arange(24).view(2, 12)  # 2 sequences of 12 tokens over cp 3
    shards = [shard_sequence(tokens, r, 3) for r in range(3)]
    assert shards[0][0].tolist() == [0, 1, 10, 11]
    # the gather's order puts every chunk back where it was
    halves = [(s[:, :2], s[:, 2:]) for s in shards]
    rebuilt = torch.cat([halves[rank][half] for rank, half in unshard_order(3)], dim=1)
    assert torch.equal(rebuilt, tokens)
    # each rank's queries see the same number of keys (causal balance)
    seen = [sum(int(p) + 1 for p in chunk_positions(4, r, 3)) for r in range(3)]
    assert len(set(seen)) == 1


def test_pipeline_stages_keep_the_names_of_the_whole_model() -> None:
    shape = dataclasses.replace(model_shape(typed(compose(["task=train", "model=tiny"]))), n_layers=5)
    assert [list(r) for r in stage_ranges(5, 2)] == [[0, 1, 2], [3, 4]]
    assert [list(r) for r in stage_ranges(5, 3)] == [[0, 1], [2, 3], [4]]  # the middle first, then the ends
    assert stage_ids(Layout(pp=2, pp_virtual_stages=2, pp_schedule="interleaved_1f1b"), 1) == [1, 3]
    whole = Transformer(shape)
    init_weights(whole, seed=7)
    names: list[str] = []
    for stage in range(2):
        with torch.device("meta"):
            part = Transformer(shape)
        cut(part, stage, 2)
        materialize(part, torch.device("cpu"), seed=7)
        assert (part.tok_embeddings is None) == (stage == 1) and (part.output is None) == (stage == 0)
        for name, param in part.named_parameters():  # the same weights as in the whole model
            assert torch.equal(param, whole.get_parameter(name)), name
            names.append(name)
    assert sorted(names) == sorted(n for n, _ in whole.named_parameters())
    assert [n for n in names if n.startswith("layers.3.")]  # stage 1's first layer keeps index 3


def test_mesh_record_says_where_each_group_runs() -> None:
    layout = Layout(dp_shard=2, tp=2).resolve(4)
    record = mesh_record(layout, ["n1", "n1", "n2", "n2"])
    assert record["dims"] == {"pp": 1, "dp_replicate": 1, "dp_shard": 2, "cp": 1, "tp": 2}
    assert record["groups"]["tp"] == [{"ranks": [0, 1], "hosts": "n1"}, {"ranks": [2, 3], "hosts": "n2"}]
    assert record["groups"]["dp_shard"] == [{"ranks": [0, 2], "hosts": "n[1-2]"}, {"ranks": [1, 3], "hosts": "n[1-2]"}]
    assert set(record["groups"]) == {"tp", "dp_shard"} and record["tp_within_node"]
    assert (record["tp_groups"], record["tp_groups_across_hosts"], record["dp_shard_groups_across_hosts"]) == (2, 0, 2)
    assert not mesh_record(layout, ["n1", "n2", "n1", "n2"])["tp_within_node"]
    big = mesh_record(Layout(tp=8).resolve(16384), [f"n{r // 8 + 1}" for r in range(16384)])
    assert (len(big["groups"]["tp"]), big["tp_groups"], big["tp_groups_across_hosts"]) == (64, 2048, 0)
    assert big["groups"]["dp_shard"][0]["hosts"] == "n[1-2048]" and big["dp_shard_groups"] == 8


@pytest.mark.parametrize(("layout", "bubble"), [
    (Layout(pp=2, pp_microbatches=4), 1 / 5),
    (Layout(pp=2, pp_microbatches=4, pp_schedule="gpipe"), 1 / 5),
    (Layout(pp=2, pp_microbatches=4, pp_virtual_stages=2, pp_schedule="interleaved_1f1b"), 1 / 9),
    (Layout(dp_shard=2), 0.0),
])  # fmt: skip
def test_summary_gives_the_pipeline_bubble(layout: Layout, bubble: float) -> None:
    layout = layout.resolve(layout.pp * max(1, layout.dp_shard), global_batch=4)
    row = {"kind": "train", "step": 3, "loss": 5.0, "step_time_s": 1.0, "tokens_per_s": 128.0,
           "tokens_per_s_per_device": 64.0, "tflops_per_device": 0.1, "mfu": None, "hfu": None,
           "peak_memory_bytes": 1, "world_size": 2, "warmup": False, "passed": True}  # fmt: skip
    figures = StepFigures()
    figures.add(row)
    summary = summary_row(figures, layout)
    assert summary["pipeline_bubble"] == pytest.approx(bubble)
    assert summary["pp"] == layout.pp and summary["layout"] == layout.describe()


def test_gradient_norm_over_groups() -> None:
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))]
    params[0].grad, params[1].grad = torch.full((3,), 2.0), torch.full((2, 2), 1.0)
    groups = by_mesh(params)
    assert len(groups) == 1  # plain tensors: one group
    assert float(total_grad_norm(groups)) == pytest.approx((3 * 4 + 4) ** 0.5)


def test_rng_restored_for_the_same_world_and_derived_for_another(tmp_path: Path) -> None:
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        torch.manual_seed(1)
        path = checkpoint.save(tmp_path / "ck", 3, lambda folder: None, {"step": 3, "world_size": 1})
        expected = torch.rand(3)
        torch.manual_seed(99)
        assert checkpoint.restore_rng(path, world_size=1, seed=5, step=3) == "restored per rank"
        assert torch.equal(torch.rand(3), expected)
        (path / checkpoint.TRAINER).write_text(json.dumps({"step": 3, "world_size": 2}))
        what = checkpoint.restore_rng(path, world_size=1, seed=5, step=3)
        assert what == "derived from (seed, step, rank): written by 2 ranks, resumed on 1"
        derived = torch.rand(3)
        torch.manual_seed(checkpoint.derived_seed(5, 3, 0))
        assert torch.equal(torch.rand(3), derived)
    finally:
        dist.destroy_process_group()
