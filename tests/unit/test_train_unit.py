"""Training pieces without processes: FLOP and memory accounting by hand, the model, the data
sampler, the schedule, and the bad input that must stop a run before it starts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config.compose import compose
from harness.config.job import typed
from harness.errors import ConfigError
from harness.perf.memory import memory_plan
from harness.perf.shape import flops_per_token, param_count
from harness.train import checkpoint
from harness.train.data import BatchSpec, SyntheticData, TokenFileData, first_index, tokenize_bytes
from harness.train.engines import lr_at
from harness.train.model import Transformer
from harness.train.task import model_shape
from tests.helpers import prepare


def shape_of(preset: str):
    return model_shape(typed(compose(["task=train", f"model={preset}"])))


def test_tiny_by_hand() -> None:
    shape = shape_of("tiny")
    # per layer: wq, wo 128x128 each; wk, wv 128x64 each; MLP 3 x 128 x 352; two norms of 128
    layer = 2 * 16384 + 2 * 8192 + 135168 + 256
    assert param_count(shape).total == 256 * 128 + 2 * layer + 128 + 256 * 128 == 434_816
    assert param_count(shape).embedding == 32_768
    assert sum(p.numel() for p in Transformer(shape).parameters()) == 434_816  # the model agrees
    # 6 (N - N_emb) + 12 L H Q T at T = 64
    assert flops_per_token(shape, 64) == 6 * 402_048 + 12 * 2 * 4 * 32 * 64 == 2_608_896
    assert flops_per_token(shape, 64, recompute=True) == 8 * 402_048 + 16 * 2 * 4 * 32 * 64


def test_llama3_8b_by_hand() -> None:
    shape = shape_of("llama3-8b")
    params = param_count(shape)
    assert params.total == 8_030_261_248  # Meta's published 8.03 B
    assert params.embedding == 128_256 * 4096 == 525_336_576
    assert flops_per_token(shape, 8192) == 6 * 7_504_924_672 + 12 * 32 * 32 * 128 * 8192 == 57_914_449_920
    plan = memory_plan(shape, dtype="bfloat16", zero_stage=3, dp_size=8, micro_batch=1, seq_len=8192)
    assert plan.weights == plan.gradients == 2 * 8_030_261_248 // 8 == 2_007_565_312
    assert plan.optimizer == 12 * 8_030_261_248 // 8 == 12_045_391_872
    assert plan.activations == 32 * 34 * 8192 * 1 * 4096 == 36_507_222_016
    replicated = memory_plan(shape, dtype="float32", zero_stage=0, dp_size=8, micro_batch=1, seq_len=8192)
    assert (replicated.weights, replicated.gradients, replicated.optimizer) == (4 * 8_030_261_248,) * 2 + (
        8 * 8_030_261_248,
    )


def test_presets_match_their_published_sizes() -> None:
    assert param_count(shape_of("llama3-70b")).total == pytest.approx(70.6e9, rel=0.01)
    assert param_count(shape_of("llama3-405b")).total == pytest.approx(405.9e9, rel=0.01)
    assert param_count(shape_of("llama3-1b")).total == pytest.approx(1.24e9, rel=0.01)
    assert param_count(shape_of("gpt3-175b")).total == pytest.approx(175e9, rel=0.01)
    assert 10e6 <= param_count(shape_of("small")).total <= 20e6


def test_model_forward_and_loss() -> None:
    torch.manual_seed(0)
    model = Transformer(shape_of("tiny"))
    tokens = torch.randint(0, 256, (3, 17))
    assert model(tokens).shape == (3, 17, 256)
    loss = model(tokens, tokens)
    assert abs(float(loss.detach()) - np.log(256)) < 0.2  # an untrained model is uniform-ish
    loss.backward()
    # causal: the logits at position 5 do not depend on later tokens
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256
    assert torch.allclose(model(tokens)[:, :6], model(changed)[:, :6])


def test_data_is_a_function_of_seed_step_and_global_index(tmp_path: Path) -> None:
    spec = BatchSpec(micro_batch=2, seq_len=8, vocab_size=256, seed=3)
    data = SyntheticData(spec)
    x, y = data.batch(5, 2)
    assert torch.equal(x, data.batch(5, 2)[0]) and torch.equal(x[:, 1:], y[:, :-1])
    assert not torch.equal(x, data.batch(5, 4)[0]) and not torch.equal(x, data.batch(6, 2)[0])
    # The global batch is the same set of sequences however ranks and micro-batches slice it:
    # 2 ranks x 2 micro-batches of 2 and 1 rank x 8 micro-batches of 1 see sequences 0..7 alike.
    two_ranks = torch.cat([data.batch(5, first_index(dp_rank=r, micro=i, micro_batch=2, accumulation=2))[0]
                           for r in range(2) for i in range(2)])  # fmt: skip
    one = SyntheticData(BatchSpec(micro_batch=1, seq_len=8, vocab_size=256, seed=3))
    one_rank = torch.cat([one.batch(5, first_index(dp_rank=0, micro=i, micro_batch=1, accumulation=8))[0]
                          for i in range(8)])  # fmt: skip
    assert torch.equal(two_ranks, one_rank)
    text = tmp_path / "t.txt"
    text.write_text("hello, exaharness! " * 20)
    assert tokenize_bytes(str(text), str(tmp_path / "t.u16")) == 380
    tokens = TokenFileData(spec, str(tmp_path / "t.u16"), "uint16")
    x, y = tokens.batch(0, 0)
    assert x.max() < 128 and torch.equal(x[:, 1:], y[:, :-1])


def test_synthetic_data_is_learnable_down_to_its_entropy_floor() -> None:
    """The chain's true bigram table scores its entropy rate; the uniform guess scores ln V."""
    data = SyntheticData(BatchSpec(micro_batch=64, seq_len=256, vocab_size=256, seed=0))
    tokens = data.sequences(0, 0, 64)
    prev, nxt = tokens[:, :-1].reshape(-1), tokens[:, 1:].reshape(-1)
    states = torch.argsort(data.permutation)  # token -> state
    moves = (states[nxt] - states[prev]) % 256
    probs = {int(o): p for o, p in zip(data.offsets, data.probs.tolist(), strict=True)}
    assert set(moves.unique().tolist()) <= set(probs)  # every step is one of the chain's offsets
    nll = -torch.tensor([math.log(probs[int(m)]) for m in moves]).mean()
    assert float(nll) == pytest.approx(data.entropy_floor_nats, rel=0.05)
    assert data.entropy_floor_nats == pytest.approx(1.0627, abs=1e-3)
    assert data.entropy_floor_nats < math.log(256) / 5


def test_schedule() -> None:
    train = typed(compose(["task=train", "train.steps=12", "train.warmup_steps=2", "train.lr=1e-3"])).train
    assert [round(lr_at(s, train), 6) for s in (1, 2)] == [0.0005, 0.001]
    assert lr_at(12, train) == pytest.approx(1e-4)  # min_lr_ratio 0.1 at the end
    assert lr_at(7, train) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # halfway down the cosine


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.n_heads=5"], "model.dim=128 is not divisible by model.n_heads=5"),
        (["model.n_kv_heads=3"], "model.n_heads=4 is not divisible by model.n_kv_heads=3"),
        (["train.global_batch=5"], "train.global_batch=5 is not a multiple of train.micro_batch x data-parallel"),
        (["engine.name=megatron"], "engine='megatron'; choices: deepspeed, fsdp, ddp"),
        (["engine=megatron"], "unknown engine preset 'megatron'; choices: ddp, deepspeed, fsdp"),
        (["engine.zero_stage=4"], "engine.zero_stage=4; choices: 0, 1, 2, 3"),
        (["train.dtype=float8"], "train.dtype='float8'; choices: float32, bfloat16, float16"),
        (["train.seq_len=4096"], "train.seq_len=4096 exceeds model.max_seq_len=256"),
        (["data.kind=tokens", "data.path=/nonexistent.u16"], "data.path='/nonexistent.u16': no such file"),
        (["model=nosuch"], "unknown model preset 'nosuch'; choices: gpt3-175b, llama3-1b"),
    ],
)
def test_bad_input_before_training(overrides: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        prepare(["task=train", f"results.dir={tmp_path}", f"train.ckpt_dir={tmp_path}/ck", *overrides])
    assert message in str(info.value)


def test_bad_token_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.u16"
    empty.write_bytes(b"")
    big = tmp_path / "big.u16"
    np.array([1, 2, 300] * 100, dtype=np.uint16).tofile(big)
    for path, message in ((empty, r"holds fewer than seq_len \+ 1"), (big, "holds token id 300, not below")):
        with pytest.raises(ConfigError, match=message):
            prepare(["task=train", "data.kind=tokens", f"data.path={path}", f"train.ckpt_dir={tmp_path}/ck"])


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    folder = ck / "step-00000003"
    folder.mkdir(parents=True)
    (folder / checkpoint.TRAINER).write_text(
        '{"step": 3, "engine": "deepspeed", "model_name": "small", "model_shape": {}}'
    )
    (ck / checkpoint.LATEST).write_text("step-00000003\n")
    with pytest.raises(ConfigError, match=r"holds step-00000003 of another run \(model.name small ≠ tiny; "
                       r"model.shape another shape ≠ this one\)"):  # fmt: skip
        prepare(["task=train", f"train.ckpt_dir={ck}"])
    prepare(["task=train", f"train.ckpt_dir={ck}", "train.resume=never"])  # starting afresh is allowed


class FakeRun:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []
        self.finished = False

    def log(self, metrics: dict, step: int) -> None:
        self.logged.append((step, metrics))

    def finish(self) -> None:
        self.finished = True


class FakeWandb:
    """wandb's two calls the logger makes, recorded."""

    def __init__(self) -> None:
        self.kwargs: dict = {}
        self.run = FakeRun()

    def init(self, **kwargs: object) -> FakeRun:
        self.kwargs = kwargs
        return self.run


def test_wandb_is_offline_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.train.metrics import WandbLogger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = typed(compose(["task=train", "logger=wandb"])).logger
    fake = FakeWandb()
    logger = WandbLogger(cfg, tmp_path, "run-1", {"train": {"steps": 3}}, wandb=fake)
    assert fake.kwargs["mode"] == "offline" and fake.kwargs["dir"] == str(tmp_path) and fake.kwargs["id"] == "run-1"
    assert __import__("os").environ["WANDB_MODE"] == "offline"
    logger.log(2, {"loss": 1.5, "mfu": None, "bench": "train", "step": 2})
    logger.finish()
    assert fake.run.logged == [(2, {"loss": 1.5, "step": 2})] and fake.run.finished


def test_bad_logger_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"logger\.wandb\.mode='sometimes'; choices: offline, online, disabled"):
        prepare(["task=train", "logger=wandb", "logger.wandb.mode=sometimes", f"train.ckpt_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="unknown logger preset 'tensorboard'; choices: none, wandb"):
        prepare(["task=train", "logger=tensorboard", f"train.ckpt_dir={tmp_path}"])
