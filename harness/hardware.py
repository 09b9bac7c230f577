"""Hardware profiles (configs/hardware/*.yaml): datasheet peaks, looked up by device name.

Peaks are data, not constants in code. A device no profile matches gets no efficiency figure
(rather than a guess: torchtitan's MFU above 100 % came from a missing table entry).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from omegaconf import OmegaConf

from harness.config.compose import config_dir
from harness.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    """One kind of device."""

    name: str
    description: str
    match: tuple[str, ...]
    """Substrings of the device name (torch.cuda.get_device_name) that identify it."""
    peak_tflops: dict[str, float] = field(default_factory=dict)
    """Dense datasheet peak per dtype, TFLOP/s."""
    memory_tbps: float | None = None
    """Memory bandwidth, TB/s."""
    link_gbps: float | None = None
    """GPU-to-GPU link bandwidth per GPU, both directions, GB/s."""
    memory_gib: float | None = None
    """Device memory, GiB (the planner's capacity: a layout fits in 0.9 of it)."""
    nvlink_domain: int | None = None
    """GPUs that share one NVLink domain (8 on HGX/DGX, 72 on GB200 NVL72)."""
    nic_gbit_per_s: float | None = None
    """Scale-out network bandwidth per GPU, one direction, Gbit/s."""
    latency_us: dict[str, float] = field(default_factory=dict)
    """Per-step latency α of a collective, microseconds: intra_node (NVLink) and inter_node (network)."""
    relative: bool = False
    """Acceptance thresholds are fractions of the peers' median (CPU nodes)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Acceptance gates as fractions (see HardwareConfig)."""


def _optional(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


def _profile(data: dict) -> Profile:
    return Profile(
        name=data["name"],
        description=data.get("description", ""),
        match=tuple(data.get("match") or ()),
        peak_tflops={k: float(v) for k, v in (data.get("peak_tflops") or {}).items()},
        memory_tbps=data.get("memory_tbps"),
        link_gbps=data.get("link_gbps"),
        memory_gib=_optional(data.get("memory_gib"), float),
        nvlink_domain=_optional(data.get("nvlink_domain"), int),
        nic_gbit_per_s=_optional(data.get("nic_gbit_per_s"), float),
        latency_us={k: float(v) for k, v in (data.get("latency_us") or {}).items()},
        relative=bool(data.get("relative", False)),
        thresholds={k: float(v) for k, v in (data.get("thresholds") or {}).items()},
    )


@cache
def profiles() -> dict[str, Profile]:
    """Every profile under configs/hardware/, by name."""
    found = {}
    for path in sorted((config_dir() / "hardware").glob("*.yaml")):
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        assert isinstance(data, dict)
        if data["name"] != "auto":  # auto is the choice to detect, not a profile
            found[data["name"]] = _profile(data)
    return found


def profile_for(device_name: str, device_type: str) -> Profile | None:
    """The profile whose longest pattern occurs in the device name ('GB200' beats 'B200');
    the generic `cpu` profile for CPUs; None for an unknown accelerator."""
    if device_type == "cpu":
        return profiles().get("cpu")
    best, best_len = None, 0
    for profile in profiles().values():
        for pattern in profile.match:
            if pattern.lower() in device_name.lower() and len(pattern) > best_len:
                best, best_len = profile, len(pattern)
    return best


def peak_tflops(device_name: str, device_type: str, dtype: str) -> float | None:
    """The datasheet peak for this device and dtype, or None when it is not known."""
    profile = profile_for(device_name, device_type)
    return profile.peak_tflops.get(dtype) if profile else None


def resolve(selected: Any, device_name: str, device_type: str) -> Profile:
    """The profile of `hardware=...`: the selected one (with any overrides of its keys), or for
    auto the one matching the device; ConfigError for a device no profile knows."""
    data = selected if isinstance(selected, dict) else dataclasses.asdict(selected)
    if data["name"] != "auto":
        return _profile(data)
    found = profile_for(device_name, device_type)
    if found is None:
        raise ConfigError(
            f"hardware=auto: no profile matches the device {device_name!r}; known profiles: "
            f"{', '.join(profiles())}; choose one (hardware=NAME) or add configs/hardware/<name>.yaml with "
            "a match pattern, peaks and thresholds (see configs/hardware/h100-sxm.yaml)"
        )
    return found
