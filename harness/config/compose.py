"""Hydra composition: the config of one job from its overrides, as hydra.main would build it, and
Hydra's and OmegaConf's errors turned into one line that names the key and the valid choices.

Hydra is initialised once per process (configs/, the ConfigStore schemas); each job is composed
once. `-m` sweeps are expanded here with Hydra's own override parser, so that every element is
composed and validated before the first one runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.config.schema import GROUPS, RunConfig
from harness.dtypes import canonical
from harness.errors import EXIT_OK, ConfigError, did_you_mean

CONFIG_NAME = "config"


def config_dir() -> Path:
    """configs/ of the source tree, or $HARNESS_CONFIG_DIR."""
    env = os.environ.get("HARNESS_CONFIG_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2] / "configs"


def group_options(group: str) -> list[str]:
    """The presets of a config group (the YAML files under configs/<group>/)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def register_configs() -> None:
    """Register the schemas so that configs/*.yaml can extend them (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=RunConfig)
    for group, node in GROUPS.items():
        store.store(group=group, name=f"base_{group}", node=node)


def _hydra() -> Any:
    """Hydra, initialised on configs/ once per process."""
    instance = GlobalHydra.instance()
    if not instance.is_initialized():
        register_configs()
        initialize_config_dir(config_dir=str(config_dir()), version_base="1.3")
    return instance.hydra


def hydra() -> Any:
    """The process's Hydra (for its launchers and --cfg)."""
    return _hydra()


def compose(overrides: list[str]) -> DictConfig:
    """The config for these overrides, as hydra.main would build it (without the hydra node)."""
    _hydra()
    try:
        return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except Exception as exc:
        raise ConfigError(explain(overrides, exc)) from None


def show(overrides: list[str], flags: list[str]) -> int:
    """--cfg job|hydra|all [--resolve] [--package P] and --info, as hydra.main prints them."""
    instance = _hydra()
    value = {flag: flags[i + 1] if i + 1 < len(flags) else "" for i, flag in enumerate(flags)}
    try:
        if "--info" in flags:
            instance.show_info(info="all", config_name=CONFIG_NAME, overrides=overrides)
            return EXIT_OK
        cfg_type = value.get("--cfg") or value.get("-c") or "job"
        if cfg_type not in ("job", "hydra", "all"):
            raise ConfigError(f"--cfg {cfg_type}: choices: job, hydra, all")
        package = value.get("--package") or value.get("-p") or None
        instance.show_cfg(config_name=CONFIG_NAME, overrides=overrides, cfg_type=cfg_type, package=package,
                          resolve="--resolve" in flags)  # fmt: skip
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(explain(overrides, exc)) from None
    return EXIT_OK


def quote(value: str) -> str:
    """A value as a single-quoted Hydra string, whatever it holds (names, paths with commas, SQL)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _valid_keys(node: Any) -> list[str]:
    return sorted(str(k) for k in list(node.keys())) if isinstance(node, DictConfig) else []


def _unknown_key(key: str, node: Any, walked: list[str]) -> str:
    where = ".".join(walked) or "top level"
    part = key.split(".")[len(walked)]
    valid = _valid_keys(node)
    return f"unknown config key {key!r}{did_you_mean(part, valid)}; valid keys at {where}: {', '.join(valid)}"


def explain(overrides: list[str], exc: BaseException) -> str:
    """One line saying which override is wrong and what would be right."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return f"cannot parse overrides: {_first_line(exc)}"
    base = None
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_delete():
            continue
        if key in GROUPS and (config_dir() / key).is_dir():
            value = override.value()
            if isinstance(value, str) and value not in group_options(key):
                choices = group_options(key)
                return f"unknown {key} preset {value!r}{did_you_mean(value, choices)}; choices: {', '.join(choices)}"
            continue
        if override.is_add():
            continue
        if base is None:
            base = compose_base()
        node: Any = base
        walked: list[str] = []
        for part in key.split("."):
            # keys(), not `in`: a DictConfig says a key holding ??? (MISSING) is absent.
            if not isinstance(node, DictConfig) or part not in list(node.keys()):
                return _unknown_key(key, node, walked)
            node = node._get_node(part)  # the node itself: reading a ??? value would raise
            walked.append(part)
    # Hydra wraps OmegaConf's error ("Error merging override ..."); the cause says what is wrong.
    cause = exc.__cause__ or exc
    message = _first_line(cause)
    full_key = getattr(cause, "full_key", None)
    if full_key and full_key not in message:
        message = f"{full_key}: {message}"
    return message


def compose_base() -> DictConfig:
    """The config with no overrides (to name valid keys in error lines)."""
    _hydra()
    return hydra_compose(config_name=CONFIG_NAME, overrides=[])


DTYPE_KEYS = ("bench.dtype", "train.dtype", "accept.gemm_dtypes")
"""Keys that hold dtypes: any accepted spelling is recorded under its canonical name."""


def canonical_dtypes(cfg: DictConfig) -> None:
    """Rewrite the dtype keys of a composed config to canonical names (bf16 -> bfloat16)."""
    for key in DTYPE_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if isinstance(value, ListConfig):
            OmegaConf.update(cfg, key, [canonical(v, key=key) for v in value], merge=False)
        else:
            OmegaConf.update(cfg, key, canonical(value, key=key), merge=False)


def refuse_unknown_keys(cfg: DictConfig) -> None:
    """Keys the schema does not declare (`+bench.foo=1`, `++bench.max_byte=4K`) are refused:
    Hydra adds them to the config and the typed config would drop them silently. Free-form
    mappings (hardware.thresholds, site.references, ...) take any key."""
    _check_node(cfg, RunConfig, [])


def _check_node(node: DictConfig, schema: type, walked: list[str]) -> None:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in list(node.keys()):
        if key == "hydra" and not walked:
            continue
        if key not in fields:
            dotted = ".".join([*walked, str(key)])
            raise ConfigError(f"unknown config key {dotted!r}{did_you_mean(str(key), list(fields))}; valid keys "
                              f"at {'.'.join(walked) or 'top level'}: {', '.join(fields)}")  # fmt: skip
        child_type = _dataclass_of(fields[key])
        child = node._get_node(key)
        if child_type is not None and isinstance(child, DictConfig):
            _check_node(child, child_type, [*walked, str(key)])


def _dataclass_of(f: dataclasses.Field) -> type | None:
    """The dataclass a field holds, if it holds one (its default factory says which)."""
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return type(value) if dataclasses.is_dataclass(value) else None
    return None


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


def section_of(override: str) -> str:
    """The top-level config section an override sets ('slurm' for slurm.nodes=2, '+slurm.x=1')."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    return parsed.key_or_group.split(".")[0].split("/")[0]


def without_hydra(cfg: DictConfig) -> DictConfig:
    """A composed config without Hydra's own node (what a launcher hands a task function)."""
    if "hydra" not in cfg:
        return cfg
    data = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(data, dict)
    data.pop("hydra")
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), data)
    assert isinstance(merged, DictConfig)
    return merged
