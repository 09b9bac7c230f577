"""Collective benchmarks with nccl-tests semantics, one small file per op."""

from harness.bench.collectives import all_gather, all_reduce, all_to_all, broadcast, reduce, reduce_scatter, sendrecv
from harness.bench.collectives.base import CollectiveBench

OPS: tuple[CollectiveBench, ...] = tuple(
    m.BENCHMARK for m in (all_reduce, all_gather, reduce_scatter, broadcast, reduce, all_to_all, sendrecv)
)

__all__ = ["OPS", "CollectiveBench"]
