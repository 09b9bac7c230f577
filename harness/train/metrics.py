"""Where training metrics go besides rows.jsonl: nowhere (logger=none) or Weights & Biases
(logger=wandb), offline unless online is asked for explicitly. Rank 0 only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from harness.config.schema import LoggerConfig
from harness.errors import ConfigError

WANDB_MODES = ("offline", "online", "disabled")


class MetricsLogger(Protocol):
    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


class NoLogger:
    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    """One wandb run per harness run, its files inside the run directory."""

    def __init__(
        self, cfg: LoggerConfig, run_dir: Path, run_id: str, config: dict[str, Any], wandb: Any = None
    ) -> None:
        if wandb is None:
            import wandb  # optional: only with logger=wandb
        self.wandb = wandb
        # wandb also reads WANDB_MODE; the config is the one source of truth here.
        os.environ["WANDB_MODE"] = cfg.wandb.mode
        self.run = wandb.init(
            project=cfg.wandb.project, entity=cfg.wandb.entity or None, name=run_id, id=run_id,
            dir=str(run_dir), mode=cfg.wandb.mode, config=config,
        )  # fmt: skip

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, int | float) and v is not None}, step=step)

    def finish(self) -> None:
        self.run.finish()


def validate(cfg: LoggerConfig) -> None:
    if cfg.name not in ("none", "wandb"):
        raise ConfigError(f"logger={cfg.name!r}; choices: none, wandb")
    if cfg.wandb.mode not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={cfg.wandb.mode!r}; choices: {', '.join(WANDB_MODES)}")
    if cfg.name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("logger=wandb but wandb is not installed: pip install wandb") from None


def make_logger(cfg: LoggerConfig, run_dir: Path, run_id: str, config: dict[str, Any]) -> MetricsLogger:
    return WandbLogger(cfg, run_dir, run_id, config) if cfg.name == "wandb" else NoLogger()
