"""Composing the Hydra config outside hydra.main (for validation, workers and tests), and turning
Hydra's and OmegaConf's errors into one line that names the key and the valid choices."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from harness.config.schema import RunConfig, register_configs
from harness.errors import ConfigError

CONFIG_NAME = "config"


def config_dir() -> Path:
    """configs/ of the source tree, or $HARNESS_CONFIG_DIR."""
    env = os.environ.get("HARNESS_CONFIG_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2] / "configs"


def group_options(group: str) -> list[str]:
    """The presets of a config group (the YAML files under configs/<group>/)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose(overrides: list[str]) -> DictConfig:
    """The config for these overrides, as hydra.main would build it (without the hydra node)."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except Exception as exc:
        raise ConfigError(explain(overrides, exc)) from None
    finally:
        GlobalHydra.instance().clear()


def to_typed(cfg: DictConfig) -> RunConfig:
    """The typed config: the only form the code below the CLI sees."""
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except Exception as exc:
        raise ConfigError(_first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _valid_keys(node: Any) -> list[str]:
    return sorted(str(k) for k in list(node.keys())) if isinstance(node, DictConfig) else []


def explain(overrides: list[str], exc: BaseException) -> str:
    """One line saying which override is wrong and what would be right."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return f"cannot parse overrides: {_first_line(exc)}"
    base = None
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_add() or override.is_delete():
            continue
        if key in ("bench",) or (config_dir() / key).is_dir():
            value = override.value()
            if isinstance(value, str) and value not in group_options(key):
                return f"unknown {key} preset {value!r}; choices: {', '.join(group_options(key))}"
            continue
        if base is None:
            base = _base_config()
        node: Any = base
        walked: list[str] = []
        for part in key.split("."):
            # keys(), not `in`: a DictConfig says a key holding ??? (MISSING) is absent.
            if not isinstance(node, DictConfig) or part not in list(node.keys()):
                where = ".".join(walked) or "top level"
                return f"unknown config key {key!r}; valid keys at {where}: {', '.join(_valid_keys(node))}"
            node = node._get_node(part)  # the node itself: reading a ??? value would raise
            walked.append(part)
    # Hydra wraps OmegaConf's error ("Error merging override ..."); the cause says what is wrong.
    cause = exc.__cause__ or exc
    message = _first_line(cause)
    full_key = getattr(cause, "full_key", None)
    if full_key and full_key not in message:
        message = f"{full_key}: {message}"
    return message


def _base_config() -> DictConfig:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=CONFIG_NAME, overrides=[])


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Every job of a multirun sweep (the cartesian product of comma lists and ranges), so each
    can be validated before the first one starts."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise ConfigError(f"cannot parse overrides: {_first_line(exc)}") from None
    choices = []
    for override, text in zip(parsed, overrides, strict=True):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(job) for job in itertools.product(*choices)]
