"""The parallel layout (harness.perf.layout): defaults, the rules of issue 13 with their
arithmetic, the pipeline bubble and the device-mesh order."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.perf.layout import (
    Layout,
    bubble_fraction,
    layout_notes,
    mesh_coords,
    mesh_shape,
    rank_groups,
    rank_of,
    stage_layers,
    valid_tp,
    validate_layout,
)
from harness.perf.shape import ModelShape

L405 = ModelShape(vocab_size=128256, dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, ffn_dim=53248)
L8 = ModelShape(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336)


def check(layout: Layout, *, world: int, seq: int = 8192, batch: int = 2048, shape: ModelShape = L405) -> Layout:
    return validate_layout(layout, shape, world_size=world, seq_len=seq, global_batch=batch, gpus_per_node=8)


def refused(layout: Layout, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        check(layout, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_resolve_fills_the_defaults() -> None:
    lay = Layout(tp=8, pp=16).resolve(16384, global_batch=2048)
    assert (lay.dp_shard, lay.pp_microbatches, lay.pp_virtual_stages, lay.sequence_parallel) == (128, 16, 1, True)
    assert Layout(tp=8, pp=16).resolve(8192, global_batch=2048).pp_microbatches == 32
    assert Layout(pp=4, pp_schedule="interleaved_1f1b").resolve(64, global_batch=64).pp_virtual_stages == 2
    assert Layout().resolve(8, global_batch=64, micro_batch=2).pp_microbatches == 4  # the accumulation count
    assert Layout(dp_replicate=2).resolve(8).dp_shard == 4
    assert Layout(tp=1).resolve(8).sequence_parallel is False


def test_what_is_left_must_be_whole() -> None:
    with pytest.raises(ConfigError, match=r"10,000 GPUs / .* = 128\) = 78.125 is not whole.*9,984 or 10,112"):
        Layout(tp=8, pp=16).resolve(10000, global_batch=2048)


def test_llama3_layouts_are_valid() -> None:
    check(Layout(tp=8, pp=16), world=16384)
    check(Layout(tp=8, pp=16, pp_schedule="interleaved_1f1b", pp_virtual_stages=4), world=8192)
    check(Layout(tp=8, cp=16, pp=16), world=16384, seq=131072, batch=128)


def test_product_of_degrees() -> None:
    message = refused(Layout(tp=8, pp=16, dp_shard=64), world=16384)
    assert "dp_replicate × dp_shard × tp × pp × cp = 1 × 64 × 8 × 16 × 1 = 8,192 ≠ world size 16,384" in message


def test_tp_must_divide_heads_ffn_and_vocabulary() -> None:
    message = refused(Layout(tp=3), world=3, shape=L8, batch=3)
    assert "parallel.tp=3 does not divide model.n_heads=32 (32 / 3 = 10.67; valid tp: 1, 2, 4, 8)" in message
    assert "parallel.tp=3 does not divide model.ffn_dim=14,336 (14,336 / 3 = 4779" in message
    assert "vocab_size" not in message  # 128,256 = 3 × 42,752
    message = refused(Layout(tp=8), world=8, batch=8, shape=ModelShape(50257, 768, 2, 8, 8, 2048))
    assert "parallel.tp=8 does not divide model.vocab_size=50,257" in message


def test_kv_heads_replicated_or_refused() -> None:
    validate_layout(Layout(tp=16, pp=8), L405, world_size=16384, seq_len=8192, global_batch=2048, gpus_per_node=16)
    assert layout_notes(Layout(tp=16).resolve(16), L405) == [
        "tp=16 > n_kv_heads=8: each KV head is replicated on 2 TP ranks"
    ]
    odd = ModelShape(vocab_size=1200, dim=768, n_layers=4, n_heads=24, n_kv_heads=8, ffn_dim=1200)
    message = validate_error(Layout(tp=12), odd)
    assert "parallel.tp=12 neither divides model.n_kv_heads=8 nor is a multiple of it" in message


def validate_error(layout: Layout, shape: ModelShape) -> str:
    with pytest.raises(ConfigError) as info:
        validate_layout(layout, shape, world_size=layout.tp, seq_len=64, global_batch=4)
    return str(info.value)


def test_layers_per_stage() -> None:
    message = refused(Layout(tp=8, pp=16, pp_schedule="interleaved_1f1b", pp_virtual_stages=8), world=16384)
    assert "parallel.pp × pp_virtual_stages = 16 × 8 = 128 stages > model.n_layers=126" in message


def test_microbatches_per_pipeline() -> None:
    message = refused(Layout(tp=8, pp=16), world=16384, batch=1024)
    assert "parallel.pp_microbatches=8 < parallel.pp=16" in message
    message = refused(Layout(tp=8, pp=16, pp_schedule="interleaved_1f1b", pp_microbatches=24, dp_shard=-1),
                      world=16384, batch=128 * 24)  # fmt: skip
    assert "parallel.pp_microbatches=24 is not a multiple of parallel.pp=16 (interleaved_1f1b: 24 / 16 = 1.5" in message


def test_sequence_must_split_into_2cp_chunks() -> None:
    message = refused(Layout(tp=8, cp=3), world=24, batch=24)
    assert "train.seq_len=8,192 is not divisible by 2 × parallel.cp = 6" in message


def test_global_batch_must_split_over_data_parallel_ranks() -> None:
    message = refused(Layout(tp=8, pp=16), world=12288)
    assert "train.global_batch=2,048 is not divisible by dp × micro_batch = 96 × 1 = 96" in message


def test_every_broken_rule_in_one_line() -> None:
    message = refused(Layout(tp=3, cp=3), world=9, batch=9, shape=L8)
    assert message.count(";") >= 3 and "tp=3" in message and "2 × parallel.cp = 6" in message


def test_valid_tp_lists_divisors_of_heads_ffn_and_vocab() -> None:
    assert valid_tp(L405, 8) == [1, 2, 4, 8]
    assert valid_tp(L405, 64) == [1, 2, 4, 8, 16, 32, 64]


def test_bubble_fraction() -> None:
    assert bubble_fraction(Layout(pp=16).resolve(512, global_batch=64)) == pytest.approx(15 / (2 + 15))
    one_f = Layout(tp=8, pp=16).resolve(8192, global_batch=2048)
    assert bubble_fraction(one_f) == pytest.approx(15 / (32 + 15))
    gpipe = Layout(tp=8, pp=16, pp_schedule="gpipe").resolve(8192, global_batch=2048)
    assert bubble_fraction(gpipe) == bubble_fraction(one_f)
    inter = Layout(tp=8, pp=16, pp_schedule="interleaved_1f1b", pp_virtual_stages=4).resolve(8192, global_batch=2048)
    assert bubble_fraction(inter) == pytest.approx(15 / (4 * 32 + 15))
    assert bubble_fraction(Layout().resolve(8)) == 0.0


def test_mesh_order_tp_innermost_pp_outermost() -> None:
    lay = Layout(dp_replicate=2, dp_shard=2, tp=2, pp=2, cp=2).resolve(32)
    assert mesh_shape(lay) == (("pp", 2), ("dp_replicate", 2), ("dp_shard", 2), ("cp", 2), ("tp", 2))
    assert mesh_coords(0, lay) == {"pp": 0, "dp_replicate": 0, "dp_shard": 0, "cp": 0, "tp": 0}
    assert mesh_coords(1, lay)["tp"] == 1 and mesh_coords(2, lay)["cp"] == 1 and mesh_coords(4, lay)["dp_shard"] == 1
    assert mesh_coords(8, lay)["dp_replicate"] == 1 and mesh_coords(16, lay)["pp"] == 1
    assert all(rank_of(mesh_coords(r, lay), lay) == r for r in range(32))
    groups = rank_groups(lay)
    assert groups["tp"][:2] == [[0, 1], [2, 3]]
    assert groups["cp"][0] == [0, 2] and groups["dp_shard"][0] == [0, 4] and groups["dp_replicate"][0] == [0, 8]
    assert groups["pp"][0] == [0, 16] and groups["dp"][0] == [0, 4, 8, 12]
    for name in ("tp", "cp", "dp_shard", "dp_replicate", "pp", "dp"):
        flat = sorted(r for g in groups[name] for r in g)
        assert flat == list(range(32)), name  # every rank in exactly one group


def test_tp_groups_stay_inside_a_node() -> None:
    lay = Layout(tp=2, pp=2).resolve(8)
    assert all(len({r // 4 for r in group}) == 1 for group in rank_groups(lay)["tp"])  # 4 GPUs per node
    message = refused(Layout(tp=16), world=16, batch=16)
    assert "parallel.tp=16 > cluster.gpus_per_node=8: TP groups must stay inside a node" in message


def test_stage_layers_give_the_ends_fewer() -> None:
    counts = stage_layers(126, 16)
    assert sum(counts) == 126 and counts[0] == counts[-1] == 7 and set(counts[1:-1]) == {8}
    assert stage_layers(80, 8) == [10] * 8
    assert stage_layers(5, 2) == [3, 2] and stage_layers(7, 1) == [7]
