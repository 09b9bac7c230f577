"""exaharness: distributed training and benchmarking harness for GPU clusters."""

__version__ = "0.1.0"
