"""What a manifest records about where a run came from: versions, git, hosts, environment.

Secrets never reach a manifest, by name or by value: environment variables and config keys
whose names look like tokens, keys or passwords are redacted whatever their value, and any value
shaped like a credential (a known token prefix, a JWT, a PEM block, a password in a URL, a long
random string) is redacted whatever its name. What the harness itself writes (git SHA, checksums,
GPU UUIDs, run and sweep ids) is never passed through here, and UUIDs are never taken for keys.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import math
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


# Credentials by shape. Prefixes are those their issuers document: GitHub (ghp_, gho_, ghu_,
# ghs_, ghr_, github_pat_), Hugging Face (hf_), OpenAI and Anthropic (sk-), AWS access key ids
# (AKIA, ASIA), Slack (xoxb-, xoxp-, ...), GitLab (glpat-), Google API keys (AIza), npm (npm_).
_PREFIXED = re.compile(
    r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|hf_[A-Za-z0-9]{20,}"
    r"|sk-[A-Za-z0-9_\-]{20,}|(?:AKIA|ASIA)[A-Z0-9]{16}|xox[abposr]-[A-Za-z0-9\-]{10,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}|AIza[0-9A-Za-z_\-]{35}|npm_[A-Za-z0-9]{36})"
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.S)
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):([^/\s@]+)@")
_LONG = re.compile(r"[A-Za-z0-9+/=_\-]{24,}")
_UUID = re.compile(r"(?:GPU-|MIG-)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_SEPARATORS = re.compile(r"[-_./+=]")
MIN_ENTROPY = 4.0
"""Bits per character a long token must reach to be taken for a key (random base64 of 40
characters measures about 5)."""
MIN_SWITCHES = 0.42
"""Share of neighbouring characters in different classes (lower, upper, digit) a long token
must reach to be taken for a key."""


def _entropy(text: str) -> float:
    counts = {c: text.count(c) for c in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _class(c: str) -> int:
    return 0 if c.islower() else 1 if c.isupper() else 2


def _random_token(token: str, whole: bool) -> bool:
    """A long string that is a key: 24 or more letters and digits that switch between lower
    case, upper case and digits as often as random ones do (about 0.6 of neighbours; words and
    identifiers switch at word starts, well under 0.42), with the entropy of random text. A bare
    hexadecimal string counts only when it is the whole value (a WANDB key): hex inside a path is
    a content hash, not a credential. Shapes are a net, not a guarantee (about 1 random key in
    50 passes it): a credential-named variable is redacted whatever its value."""
    if _UUID.fullmatch(token):
        return False
    if _HEX.fullmatch(token):
        return whole and any(c.isdigit() for c in token) and any(c.isalpha() for c in token) and _entropy(token) >= 3
    core = _SEPARATORS.sub("", token)
    if len(core) < 24 or not all(any(_class(c) == k for c in core) for k in (0, 1, 2)):
        return False
    switches = sum(_class(a) != _class(b) for a, b in itertools.pairwise(core)) / (len(core) - 1)
    return switches >= MIN_SWITCHES and _entropy(token) >= MIN_ENTROPY


def scrub(text: str) -> str:
    """`text` with every credential-shaped part replaced by <redacted> (the rest kept, so that
    an error message or a URL still says what it said)."""
    if not text:
        return text
    text = _PEM.sub(REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _PREFIXED.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    whole = text.strip()
    return _LONG.sub(lambda m: REDACTED if _random_token(m.group(0), m.group(0) == whole) else m.group(0), text)


def looks_like_secret(value: str) -> bool:
    """True when `value` holds something shaped like a credential."""
    return scrub(value) != value


def is_secret_name(name: str) -> bool:
    """True for credential names: HF_TOKEN, WANDB_API_KEY, db_password, aws_secret_access_key;
    False for kernel_tokens, max_bytes, TOKENIZERS_PARALLELISM."""
    return name.upper() in _KNOWN_SECRETS or bool(_SECRET.search(name))


def redact(value: Any, keep: frozenset[str] = frozenset(), prefix: str = "") -> Any:
    """A copy of a nested mapping/list with the values of credential-named keys replaced, and
    credential-shaped parts of every string scrubbed. Keys in `keep` (dotted paths: those a
    schema declares as numbers or sizes, the run's own ids) are never replaced."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            path = f"{prefix}{key}"
            if path in keep:
                out[key] = item
                continue
            secret = is_secret_name(str(key)) and item is not None
            out[key] = REDACTED if secret else redact(item, keep, f"{path}.")
        return out
    if isinstance(value, list | tuple):
        return [redact(v, keep, prefix) for v in value]
    if isinstance(value, str):
        return scrub(value)
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
