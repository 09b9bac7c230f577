"""What a manifest records about where a run came from: versions, git, hosts, environment.

Secrets never reach a manifest: environment variables and config keys whose names look like
tokens, keys or passwords are redacted, whatever their value.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"
_SECRET = re.compile(r"(TOKEN|SECRET|PASSW|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH|COOKIE|SESSION)", re.I)
# Variables that explain a run's behaviour; everything else in the environment stays out.
_ENV_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_", "NCCL_", "CUDA_", "TORCH_", "OMP_", "MKL_",
                 "HARNESS_", "HYDRA_", "WANDB_", "UCX_", "FI_", "GLOO_", "MPIR_CVAR_", "MPICH_")
_ENV_NAMES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "HOSTNAME")
_PACKAGES = ("torch", "deepspeed", "hydra-core", "omegaconf", "mpi4py", "triton", "numpy", "submitit", "wandb")


def is_secret_name(name: str) -> bool:
    """True for names like HF_TOKEN, WANDB_API_KEY, db_password, aws_secret_access_key."""
    return bool(_SECRET.search(name))


def redact(value: Any) -> Any:
    """A copy of a nested mapping/list with the values of secret-looking keys replaced."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_name(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The launcher and library variables of this process, secrets redacted."""
    env = os.environ if env is None else env
    keep = {k: v for k, v in env.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}
    return dict(sorted(redact(keep).items()))


def versions() -> dict[str, str | None]:
    """Versions of Python, the harness's main libraries, and CUDA/NCCL/MPI when present."""
    found: dict[str, str | None] = {"python": platform.python_version(), "exaharness": None}
    for dist in ("exaharness", *_PACKAGES):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    import torch

    found["cuda"] = torch.version.cuda
    found["nccl"] = None
    if torch.cuda.is_available():
        with contextlib.suppress(Exception):
            found["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    if "mpi4py.MPI" in sys.modules:  # only where MPI is in use: importing it elsewhere may start MPI
        with contextlib.suppress(Exception):
            found["mpi"] = sys.modules["mpi4py.MPI"].Get_library_version().splitlines()[0].strip()
    return found


def git_sha(path: Path | None = None) -> dict[str, Any]:
    """The commit of the harness's source tree, and whether it had uncommitted changes."""
    where = path or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True,
            timeout=10,
        )
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
