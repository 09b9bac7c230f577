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
# Credential names, not substrings of ordinary words: bench.kernel_tokens is a count, not a token.
# A name is a credential when it ends in _TOKEN, _API_KEY, _CREDENTIALS, _PWD or _PASSWD, or
# holds SECRET, PASSWORD or PASSPHRASE anywhere, or is one of the well-known ones.
_SECRET = re.compile(
    r"(^|[_.\-])(TOKEN|API_?KEY|CREDENTIALS?|PWD|PASSWD)$|SECRET|PASSWORD|PASSPHRASE|PRIVATE_KEY", re.I
)
_KNOWN_SECRETS = frozenset(
    {
        "WANDB_API_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "OPENAI_API_KEY",
    }
)
# Variables that explain a run's behaviour; everything else in the environment stays out.
_ENV_PREFIXES = (
    "SLURM_",
    "OMPI_",
    "PMI_",
    "PMIX_",
    "MPI_",
    "NCCL_",
    "CUDA_",
    "TORCH_",
    "OMP_",
    "MKL_",
    "HARNESS_",
    "HYDRA_",
    "WANDB_",
    "UCX_",
    "FI_",
    "GLOO_",
    "MPIR_CVAR_",
    "MPICH_",
)
_ENV_NAMES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "HOSTNAME")
_PACKAGES = ("torch", "deepspeed", "hydra-core", "omegaconf", "mpi4py", "triton", "numpy", "submitit", "wandb")


def is_secret_name(name: str) -> bool:
    """True for credential names: HF_TOKEN, WANDB_API_KEY, db_password, aws_secret_access_key;
    False for kernel_tokens, max_bytes, TOKENIZERS_PARALLELISM."""
    return name.upper() in _KNOWN_SECRETS or bool(_SECRET.search(name))


def redact(value: Any, keep: frozenset[str] = frozenset(), prefix: str = "") -> Any:
    """A copy of a nested mapping/list with the values of credential-named keys replaced. Keys
    in `keep` (dotted paths, e.g. those a schema declares as numbers or sizes) are never replaced,
    whatever they are called."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            path = f"{prefix}{key}"
            secret = is_secret_name(str(key)) and path not in keep and item is not None
            out[key] = REDACTED if secret else redact(item, keep, f"{path}.")
        return out
    if isinstance(value, list | tuple):
        return [redact(v, keep, prefix) for v in value]
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
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
