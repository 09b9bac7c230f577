"""The performance model: a decoder's shape, parameters and FLOPs, the parallel layout and its
checks, the memory a layout needs per device, and the cost of a training step on a cluster
(compute, communication, pipeline, data parallelism), the planner that searches layouts, the
projection over GPU counts and its calibration on measured runs. Pure Python (numpy for the
fits), no torch: a 405B plan on 16,384 GPUs is checked on a laptop, and both the training planner
and `harness project` call it. docs/projection.md documents every term and constant.

Modules: shape (ModelShape, FLOPs), layout (Layout, validation, mesh), device (Device from a
hardware profile), workload (Workload), assumptions (the model's constants), memory (per-device
memory), compute, comm, step (StepEstimate), search (planner), project (rows, summary),
plots (PNG), calibrate (fits to measured rows).
"""
