"""Training data: a seeded, learnable synthetic source, or a memory-mapped flat file of token ids
(uint16 or uint32, the format nanoGPT and Megatron use).

Every sequence is a pure function of (seed, step, global sample index): step s's global batch is
sequences 0 .. global_batch − 1, and each data-parallel rank takes its slice of it, micro-batch
by micro-batch. A run's batches therefore do not depend on how many ranks share them or how they
are laid out, a resumed run sees exactly the batches it would have seen, and no sampler state
needs saving.

The synthetic source is a Markov chain whose next token is the current one moved by a random
offset: state' = state + ε mod V with ε one of a few offsets of fixed probabilities, and the
token is a seeded permutation of the state. Each token has four possible successors, so a model
that learns the bigram table reaches the chain's entropy rate, H(ε) (about 1.06 nats), far below
the ln V of uniform tokens (5.55 nats at V = 256), on which a broken gradient and a working one
look the same. Generation is a cumulative sum, so it costs next to nothing at any length.

`python -m harness.train.tokenize in.txt out.u16` makes a token file from text with the
byte-level tokenizer (token = byte value, vocabulary 256; nothing is downloaded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import ConfigError

TOKEN_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
OFFSET_PROBS = (0.6, 0.2, 0.15, 0.05)
"""Probabilities of the chain's offsets: its entropy rate is the entropy of these."""


def _generator(*key: int) -> torch.Generator:
    # A fixed mix of the numbers (not Python's hash, which is salted per process).
    mixed = 0
    for number in key:
        mixed = (mixed * 1_000_003 + number) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


@dataclass(frozen=True)
class BatchSpec:
    """The shape of the data: micro-batch, sequence length, vocabulary, seed."""

    micro_batch: int
    seq_len: int
    vocab_size: int
    seed: int


def first_index(*, dp_rank: int, micro: int, micro_batch: int, accumulation: int) -> int:
    """The global index of the first sequence of a rank's micro-batch: rank r holds the r-th
    contiguous slice of the global batch, micro-batch by micro-batch."""
    return (dp_rank * accumulation + micro) * micro_batch


class SyntheticData:
    """The seeded Markov chain (see the module docstring)."""

    def __init__(self, spec: BatchSpec) -> None:
        self.spec = spec
        setup = _generator(spec.seed, 7)  # the chain is part of the data seed, not of any step
        self.permutation = torch.randperm(spec.vocab_size, generator=setup)
        offsets = torch.randperm(spec.vocab_size - 1, generator=setup)[: len(OFFSET_PROBS)] + 1
        self.offsets = offsets if spec.vocab_size > len(OFFSET_PROBS) else torch.arange(1, len(OFFSET_PROBS) + 1)
        self.probs = torch.tensor(OFFSET_PROBS)

    @property
    def entropy_floor_nats(self) -> float:
        """The chain's entropy rate: the lowest mean cross-entropy any model can reach."""
        return -sum(p * math.log(p) for p in OFFSET_PROBS)

    def sequences(self, step: int, start: int, count: int) -> torch.Tensor:
        """Sequences start .. start + count − 1 of step `step`'s global batch, (count, seq_len + 1)."""
        s = self.spec
        rows = []
        for index in range(start, start + count):
            gen = _generator(s.seed, step, index)
            first = torch.randint(0, s.vocab_size, (1,), generator=gen)
            moves = self.offsets[torch.multinomial(self.probs, s.seq_len, replacement=True, generator=gen)]
            states = torch.cat([first, first + torch.cumsum(moves, 0)]) % s.vocab_size
            rows.append(self.permutation[states])
        return torch.stack(rows)

    def batch(self, step: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch whose first sequence is global index `start`: (inputs, targets)."""
        tokens = self.sequences(step, start, self.spec.micro_batch)
        return tokens[:, :-1], tokens[:, 1:]


class TokenFileData:
    """Windows of seq_len + 1 tokens at seeded random offsets of a flat token file."""

    entropy_floor_nats = None
    """Unknown for real text."""

    def __init__(self, spec: BatchSpec, path: str, dtype: str) -> None:
        self.spec = spec
        self.tokens = open_token_file(path, dtype, spec.vocab_size, spec.seq_len)

    def sequences(self, step: int, start: int, count: int) -> torch.Tensor:
        s = self.spec
        rows = []
        for index in range(start, start + count):
            gen = _generator(s.seed, step, index)
            offset = int(torch.randint(0, len(self.tokens) - s.seq_len, (1,), generator=gen))
            rows.append(self.tokens[offset : offset + s.seq_len + 1].astype(np.int64))
        return torch.from_numpy(np.stack(rows))

    def batch(self, step: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.sequences(step, start, self.spec.micro_batch)
        return tokens[:, :-1], tokens[:, 1:]


def open_token_file(path: str, dtype: str, vocab_size: int, seq_len: int) -> np.ndarray:
    """The file as a read-only memory map, checked: present, long enough, ids < vocabulary."""
    if dtype not in TOKEN_DTYPES:
        raise ConfigError(f"data.dtype={dtype!r}; choices: {', '.join(TOKEN_DTYPES)}")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"data.path={path!r}: no such file (make one with python -m harness.train.tokenize)")
    size = np.dtype(TOKEN_DTYPES[dtype]).itemsize
    if file.stat().st_size % size:
        raise ConfigError(f"data.path={path!r}: {file.stat().st_size} bytes is not a whole number of {dtype} ids")
    if file.stat().st_size < (seq_len + 1) * size:
        raise ConfigError(f"data.path={path!r} holds fewer than seq_len + 1 = {seq_len + 1} tokens")
    tokens = np.memmap(file, dtype=TOKEN_DTYPES[dtype], mode="r")
    largest = int(tokens.max())
    if largest >= vocab_size:
        raise ConfigError(f"data.path={path!r} holds token id {largest}, not below the model's vocab_size {vocab_size}")
    return tokens


def tokenize_bytes(text_path: str, out_path: str, dtype: str = "uint16") -> int:
    """Write the bytes of a text file as token ids; returns the number of tokens."""
    data = np.frombuffer(Path(text_path).read_bytes(), dtype=np.uint8).astype(TOKEN_DTYPES[dtype])
    tmp = Path(out_path).with_suffix(".tmp")
    data.tofile(tmp)
    tmp.replace(out_path)
    return len(data)
