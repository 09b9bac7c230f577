"""What the cost model needs to know about one kind of GPU and its network, taken from a hardware
profile (configs/hardware/*.yaml) plus the model's documented efficiency constants, or from
calibration runs.

Constants and their sources (docs/projection.md has the discussion):
- GEMM ceiling: mamf-finder's maximum achievable matmul FLOP/s over a shape sweep, as a fraction
  of the datasheet dense peak (shared/REFERENCE.md §2, stas00/ml-engineering): BF16 A100 SXM
  271/312, H100 SXM 794/989, GH200 829/989, B200 1745/2250, GB200 1822/2500, MI300X 668/1300;
  FP8 H100 1403/1979, B200 3433/4500. H200 has the H100's tensor cores and clocks: the H100
  figure. A device not in the table gets 0.75 (below every NVIDIA figure measured).
- Link efficiency: NVLink collectives reach the profile's acceptance gate `all_reduce_busbw` of
  link_gbps / 2 (0.80: nccl-tests all_reduce/all_gather busbw on DGX H100 is about 360-370 of
  450 GB/s); the scale-out network 0.90 of the NIC (nccl-tests busbw across NDR nodes is about
  45 of 50 GB/s per NIC).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.errors import ConfigError
from harness.hardware import Profile

MAMF_FRACTION: dict[str, dict[str, float]] = {
    "a100-sxm": {"bfloat16": 271 / 312, "float16": 271 / 312},
    "h100-sxm": {"bfloat16": 794 / 989, "float16": 794 / 989, "float8": 1403 / 1979},
    "h100-pcie": {"bfloat16": 794 / 989, "float16": 794 / 989, "float8": 1403 / 1979},
    "h200": {"bfloat16": 794 / 989, "float16": 794 / 989, "float8": 1403 / 1979},
    "b200": {"bfloat16": 1745 / 2250, "float16": 1745 / 2250, "float8": 3433 / 4500},
    "gb200": {"bfloat16": 1822 / 2500, "float16": 1822 / 2500, "float8": 3433 / 4500},
    "mi300x": {"bfloat16": 668 / 1300, "float16": 668 / 1300},
}
"""Best measured GEMM TFLOP/s over the datasheet peak, per profile and dtype (mamf-finder)."""
DEFAULT_MAMF_FRACTION = 0.75
SM_COUNT: dict[str, int] = {
    "a100-sxm": 108,
    "h100-sxm": 132,
    "h100-pcie": 114,
    "h200": 132,
    "b200": 148,
    "gb200": 148,
    "mi300x": 304,
}
"""Streaming multiprocessors (compute units on MI300X) per GPU, from the architecture whitepapers:
GEMM tiles run in waves of this many (wave quantization)."""
INTER_NODE_EFFICIENCY = 0.90
DEFAULT_INTRA_EFFICIENCY = 0.80

DTYPE_ALIASES = {
    "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "half": "float16",
    "fp32": "float32", "float32": "float32", "float": "float32", "fp8": "float8", "float8": "float8",
    "e4m3": "float8", "float8_e4m3fn": "float8", "tf32": "tf32",
}  # fmt: skip


def canonical_dtype(dtype: str) -> str:
    """'bf16' -> 'bfloat16', 'fp8' -> 'float8'; ConfigError for a name the model does not know."""
    try:
        return DTYPE_ALIASES[str(dtype).lower()]
    except KeyError:
        known = ", ".join(sorted(set(DTYPE_ALIASES.values())))
        raise ConfigError(f"train.dtype={dtype!r}: the projection knows {known} (bf16, fp16, fp32, fp8)") from None


@dataclass(frozen=True)
class AlphaBeta:
    """A fitted collective: t = steps(n)·alpha_s + bus_factor(n)·S / (beta_gbps·1e9)."""

    alpha_s: float
    beta_gbps: float


@dataclass(frozen=True)
class Device:
    """One GPU and its links, as the cost model sees them. Bandwidths are one direction, GB/s."""

    name: str
    peak_tflops: Mapping[str, float]
    memory_gib: float | None
    memory_tbps: float | None
    nvlink_gbps: float
    """NVLink per GPU, one direction (link_gbps / 2), GB/s."""
    nvlink_domain: int
    """GPUs reachable over NVLink (8 on HGX/DGX, 72 on GB200 NVL72)."""
    nic_gbps: float
    """Scale-out network per GPU, one direction (nic_gbit_per_s / 8), GB/s."""
    latency_intra_s: float
    latency_inter_s: float
    gemm_fraction: Mapping[str, float] = field(default_factory=dict)
    """Best GEMM TFLOP/s / peak per dtype (mamf-finder), or a calibrated value."""
    intra_efficiency: float = DEFAULT_INTRA_EFFICIENCY
    """Achieved busbw over nvlink_gbps."""
    inter_efficiency: float = INTER_NODE_EFFICIENCY
    """Achieved busbw over nic_gbps."""
    gemm_table: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Measured GEMMs per dtype: (FLOPs, TFLOP/s) sorted by FLOPs (calibration); preferred when given."""
    collectives: Mapping[tuple[str, str], AlphaBeta] = field(default_factory=dict)
    """Fitted (op, 'intra'|'inter') -> α, β (calibration); preferred over the profile's figures."""
    compute_scale: float = 1.0
    """Measured / modelled compute time of training steps (calibration); 1 without it."""
    sm_count: int | None = None
    """Streaming multiprocessors: GEMM tiles run in waves of this many; None: no wave quantization."""

    def __hash__(self) -> int:  # the mappings make the generated hash fail; the cost model caches on devices
        return hash(
            (self.name, self.memory_gib, self.memory_tbps, self.nvlink_gbps, self.nvlink_domain, self.nic_gbps,
             self.latency_intra_s, self.latency_inter_s, self.intra_efficiency, self.inter_efficiency,
             self.compute_scale, self.sm_count, tuple(sorted(self.peak_tflops.items())),
             tuple(sorted(self.gemm_fraction.items())), tuple(sorted(self.gemm_table.items())),
             tuple(sorted(self.collectives.items())))
        )  # fmt: skip

    def peak(self, dtype: str) -> float | None:
        """Dense datasheet peak TFLOP/s for this dtype, or None."""
        return self.peak_tflops.get(canonical_dtype(dtype))

    def gemm_ceiling_tflops(self, dtype: str) -> float:
        """The TFLOP/s large GEMMs reach: peak × MAMF fraction (or the calibrated best)."""
        dtype = canonical_dtype(dtype)
        table = self.gemm_table.get(dtype)
        if table:
            return max(tflops for _, tflops in table)
        peak = self.peak(dtype)
        if peak is None:
            raise ConfigError(
                f"hardware={self.name}: no {dtype} peak in the profile and no gemm calibration for it; "
                f"known dtypes: {', '.join(sorted(self.peak_tflops)) or 'none'}"
            )
        return peak * self.gemm_fraction.get(dtype, DEFAULT_MAMF_FRACTION)

    @property
    def memory_capacity_bytes(self) -> int | None:
        return int(self.memory_gib * 2**30) if self.memory_gib else None


NETWORK_KEYS = ("memory_gib", "nvlink_domain", "nic_gbit_per_s", "latency_us", "link_gbps")


def device_from_profile(profile: Profile) -> Device:
    """The cost model's view of a profile; ConfigError (one line) when network figures are missing."""
    latency = getattr(profile, "latency_us", None) or {}
    missing = [
        key for key, value in (
            ("memory_gib", getattr(profile, "memory_gib", None)), ("link_gbps", profile.link_gbps),
            ("nvlink_domain", getattr(profile, "nvlink_domain", None)),
            ("nic_gbit_per_s", getattr(profile, "nic_gbit_per_s", None)),
            ("latency_us.intra_node", latency.get("intra_node")), ("latency_us.inter_node", latency.get("inter_node")),
        ) if value is None
    ]  # fmt: skip
    if missing:
        raise ConfigError(
            f"hardware={profile.name}: the profile has no {', '.join(missing)}; a projection needs the network "
            f"figures (add them to configs/hardware/{profile.name}.yaml, see h100-sxm.yaml) or calibration runs "
            "(project.calibrate=[run dir, ...])"
        )
    if not profile.peak_tflops:
        raise ConfigError(f"hardware={profile.name}: the profile has no peak_tflops; a projection needs the peaks")
    intra = profile.thresholds.get("all_reduce_busbw", DEFAULT_INTRA_EFFICIENCY)
    return Device(
        name=profile.name,
        peak_tflops=dict(profile.peak_tflops),
        memory_gib=float(profile.memory_gib),  # type: ignore[arg-type]
        memory_tbps=profile.memory_tbps,
        nvlink_gbps=float(profile.link_gbps) / 2,  # type: ignore[arg-type]
        nvlink_domain=int(profile.nvlink_domain),  # type: ignore[arg-type]
        nic_gbps=float(profile.nic_gbit_per_s) / 8,  # type: ignore[arg-type]
        latency_intra_s=float(latency["intra_node"]) * 1e-6,
        latency_inter_s=float(latency["inter_node"]) * 1e-6,
        gemm_fraction=dict(MAMF_FRACTION.get(profile.name, {})),
        intra_efficiency=float(intra),
        sm_count=SM_COUNT.get(profile.name),
    )


def with_overrides(device: Device, **changes: object) -> Device:
    """A copy of the device with some fields replaced (calibration, what-if studies)."""
    return dataclasses.replace(device, **changes)  # type: ignore[arg-type]
