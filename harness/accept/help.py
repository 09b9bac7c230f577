"""`harness accept --help`."""

from __future__ import annotations

from harness.config.compose import group_options
from harness.config.docs import describe
from harness.config.helptext import keys_table
from harness.config.schema import AcceptConfig, FaultConfig, HardwareConfig


def text() -> str:
    """Profiles, site references, every accept/hardware/fault key, exit codes and examples."""
    sections = [("accept", AcceptConfig), ("hardware", HardwareConfig), ("fault", FaultConfig)]
    keys = [(f"{prefix}.{k}", d, doc) for prefix, cls in sections for k, d, doc in describe(cls)]
    return f"""usage: harness accept [key=value ...]

Health checks, then gemm and memory on every GPU at once, all_reduce per node and across nodes,
and node-pair exchanges; each figure against the hardware profile, the site's references and
its peers (median and MAD). Writes report.html, report.md, junit.xml and exclude.txt.

hardware profiles: hardware={"|".join(group_options("hardware"))} (default auto: from the device name)
site references:   site={"|".join(group_options("site"))} (configs/site/<system>.yaml)

keys:
{keys_table(keys)}

exit codes: 0 every check passed, 1 a check failed, 2 bad input

examples:
  harness accept                                            # hardware=auto, 2 CPU ranks here
  harness accept launch.nproc=8 cluster.gpus_per_node=8     # one node of 8 GPUs (expected per node)
  srun -N 64 --ntasks-per-node 8 --gpus-per-node 8 harness accept site=mycluster
  sbatch -N 4 --gpus-per-node 8 slurm/accept.sbatch accept.gpus_per_node=8
  harness accept launch.nproc=4 fault.slow_rank=2           # check that detection works"""
