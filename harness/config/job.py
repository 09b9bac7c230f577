"""A job: one run's configuration, composed once, typed, sealed, with its task's plan.

`harness.load` builds jobs from argv (Hydra composes each job once). The supervisor writes the
job as `config.json` in its run directory and the ranks read that file: no rank composes the
config again or sees override strings. Under an external launcher every rank loads argv itself
and rank 0 writes the file.

Secrets never enter config.json: a value interpolated from a secret-named environment variable
(`${oc.env:WANDB_API_KEY}`) is written as that interpolation, unresolved, and each rank resolves
it from its own environment when it reads the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import codec
from harness.config.schema import RunConfig, seal
from harness.errors import ConfigError
from harness.results.provenance import REDACTED, is_secret_name, looks_like_secret
from harness.results.run import write_job_file

JOB_FILE = "config.json"
FORMAT = "exaharness-job/1"
_ENV = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")


def secret_keys(raw: Mapping[str, Any], prefix: str = "") -> tuple[str, ...]:
    """Dotted keys whose (unresolved) value reads a credential from the environment (by the
    variable's name or its value's shape): they stay unresolved in every file a run writes."""
    found: list[str] = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.extend(secret_keys(value, f"{path}."))
        elif isinstance(value, list):
            found.extend(path for item in value if isinstance(item, str) and _reads_secret(item))
        elif isinstance(value, str) and _reads_secret(value):
            found.append(path)
    return tuple(dict.fromkeys(found))


def _reads_secret(text: str) -> bool:
    """True when `text` interpolates an environment variable named like a credential, or one
    whose value (here) is shaped like one."""
    return any(is_secret_name(name) or looks_like_secret(os.environ.get(name, "")) for name in _ENV.findall(text))


def _without(data: Any, values: set[str]) -> Any:
    """`data` with every string holding one of `values` redacted: a plan may copy a config value
    (accept's hardware profile), and a secret copied there must not reach the job file either."""
    if not values:
        return data
    if isinstance(data, Mapping):
        return {k: _without(v, values) for k, v in data.items()}
    if isinstance(data, list):
        return [_without(v, values) for v in data]
    if isinstance(data, str) and any(v in data for v in values):
        return REDACTED
    return data


def typed(cfg: DictConfig) -> RunConfig:
    """The composed config as sealed dataclasses; ConfigError for a value the schema refuses."""
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:  # OmegaConf's errors: a missing value, a failed interpolation
        text = str(exc).strip().splitlines()
        raise ConfigError(text[0] if text else type(exc).__name__) from None
    assert isinstance(obj, RunConfig)
    return seal(obj)


@dataclass(frozen=True)
class Job:
    """One run: its config, where it runs, and what its task planned."""

    task: str
    """The registry name of the task ('bench', 'results compare')."""
    config: RunConfig
    """The composed config, typed and sealed."""
    device_type: str
    """cpu | cuda."""
    run_id: str
    """The run directory's name."""
    world_size: int | None = None
    """Ranks of the job, when known before they start (None: the launcher decides)."""
    nproc: int = 0
    """Ranks the harness starts itself on this host (0: under an external launcher, or none)."""
    sweep_id: str | None = None
    """The sweep (-m, a Slurm array) this run belongs to."""
    secrets: tuple[str, ...] = ()
    """Config keys interpolated from secret-named variables (kept unresolved in files)."""
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    """The unresolved values of the `secrets` keys, as the user wrote them."""
    plan: Any = None
    """The task's frozen plan (the result of its validate hook)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.config.results.dir) / self.run_id

    def config_dict(self) -> dict[str, Any]:
        """The resolved config as plain data, secret-interpolated values left unresolved."""
        data = dataclasses.asdict(self.config)
        for key in self.secrets:
            node = data
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = self.raw[key]
        return data

    def to_json(self) -> dict[str, Any]:
        """What config.json holds."""
        return {
            "format": FORMAT,
            "task": self.task,
            "run_id": self.run_id,
            "sweep_id": self.sweep_id,
            "device_type": self.device_type,
            "world_size": self.world_size,
            "nproc": self.nproc,
            "secrets": list(self.secrets),
            "config": self.config_dict(),
            "plan": _without(codec.encode(self.plan), self._secret_values()),
        }

    def _secret_values(self) -> set[str]:
        """The resolved values of the secret keys (what must not be written)."""
        values = set()
        for key in self.secrets:
            node: Any = self.config
            for part in key.split("."):
                node = node.get(part) if isinstance(node, Mapping) else getattr(node, part, None)
            if isinstance(node, str) and node:
                values.add(node)
        return values

    def write(self, folder: Path) -> Path:
        """config.json in the run directory `folder` (atomically); returns its path."""
        return write_job_file(Path(folder), JOB_FILE, self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        """The job a config.json holds; secret interpolations are resolved from this process's
        environment."""
        if data.get("format") != FORMAT:
            raise ConfigError(f"not a job file of this harness (format {data.get('format')!r}, expected {FORMAT})")
        composed = OmegaConf.merge(OmegaConf.structured(RunConfig), data["config"])
        assert isinstance(composed, DictConfig)
        secrets = tuple(data.get("secrets") or ())
        raw = raw_values(composed, secrets)
        return cls(
            task=data["task"], config=typed(composed), device_type=data["device_type"], run_id=data["run_id"],
            world_size=data.get("world_size"), nproc=data.get("nproc", 0), sweep_id=data.get("sweep_id"),
            secrets=secrets, raw=raw, plan=codec.decode(data.get("plan")),
        )  # fmt: skip

    @classmethod
    def read(cls, path: Path) -> Job:
        """Read config.json; ConfigError (one line) when it is missing or damaged."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the job file {path}: {exc}") from None
        return cls.from_json(data)


def raw_values(cfg: DictConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """The unresolved value of each dotted key, as written (interpolations left as text)."""
    data = OmegaConf.to_container(cfg, resolve=False)
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = data
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out
