"""Calibration: fit the cost model's constants to what this harness measured.

- Collectives (`harness bench all_reduce|all_gather|reduce_scatter|sendrecv` rows: op, bytes,
  time_us, group_size): least squares of t = steps(n)·α + bus_factor(n)·S/β per op, each row
  weighted by 1/t so that small and large messages count alike; α ≥ 0.
- GEMMs (`harness bench gemm` rows: m, n, k, dtype, tflops): the measured (FLOPs, TFLOP/s) table
  the compute model interpolates, the best rate, its fraction of the peak, and the fixed cost of
  t = F/best + t₀ fitted over the shapes.
- Training steps (`harness train` rows: step_time_s): the ratio of measured to modelled compute
  time, applied to every compute term (`Device.compute_scale`).

Residuals are relative: (model − measured) / measured. Rows of another benchmark or device than
asked, and files that are not JSON lines, are refused with one line (ConfigError).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.hardware import profile_for
from harness.perf.comm import ring_steps
from harness.perf.device import AlphaBeta, Device, canonical_dtype
from harness.units import bus_factor

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "sendrecv", "all_to_all", "broadcast", "reduce")
CALIBRATION_KINDS = (*COLLECTIVE_OPS, "gemm", "train")


def row_kind(row: Mapping[str, Any]) -> str | None:
    """The kind of a row: `kind` (schema v3) or `bench` (v1, v2) — as harness.results.kinds.row_kind."""
    kind = row.get("kind", row.get("bench"))
    return str(kind) if kind is not None else None


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a rows.jsonl file; ConfigError naming the first line that is not a JSON object."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"project.calibrate: cannot read {path}: {error.strerror or error}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"project.calibrate: {path} line {number} is not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"project.calibrate: {path} line {number} is not a JSON object: corrupt file")
        rows.append(row)
    return rows


def load_run(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run directory's rows, each given the run's device name and type and its node count from
    the manifest (as `device_name`, `device_type`, `nodes`), for the checks below."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except OSError:
        raise ConfigError(f"project.calibrate: {run_dir} is not a run directory (no readable manifest.json)") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"project.calibrate: {manifest_path} is not JSON ({error.msg}): corrupt file") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"project.calibrate: {manifest_path} is not a JSON object: corrupt file")
    devices = [d for d in manifest.get("devices") or [] if isinstance(d, dict)]
    names = sorted({str(d.get("name")) for d in devices if d.get("name")})
    if len(names) > 1:
        raise ConfigError(f"project.calibrate: {run_dir} mixes devices ({', '.join(names)}); calibrate on one kind")
    hosts = {h for h in manifest.get("hosts") or [] if isinstance(h, str)} | {
        str(d["host"]) for d in devices if d.get("host")
    }
    extra = {
        "device_name": names[0] if names else None,
        "device_type": devices[0].get("type") if devices else None,
        "nodes": max(1, len(hosts)),
    }
    return [{**row, **{k: v for k, v in extra.items() if k not in row}} for row in load_rows(run_dir / "rows.jsonl")]


def check_rows(
    rows: Iterable[Mapping[str, Any]], *, kinds: Sequence[str] = CALIBRATION_KINDS, device: str | None = None,
) -> None:  # fmt: skip
    """ConfigError (one line) for a row of another kind than `kinds` or of another device than `device`
    (compared with the row's device_name, or the profile that name matches)."""
    for index, row in enumerate(rows, 1):
        kind = row_kind(row)
        if kind not in kinds:
            raise ConfigError(
                f"project.calibrate: row {index} is a {kind!r} row; this calibration takes {', '.join(kinds)} runs"
            )
        if device and not _same_device(row, device):
            raise ConfigError(
                f"project.calibrate: row {index} was measured on {row.get('device_name')!r}, not on {device!r}; "
                "calibrate with runs of the device you project"
            )


def _same_device(row: Mapping[str, Any], device: str) -> bool:
    name = row.get("device_name")
    if name is None:
        return True  # rows without a manifest carry no device: the caller vouches for them
    if str(name).lower() == device.lower():
        return True
    try:
        profile = profile_for(str(name), str(row.get("device_type") or "cuda"))
    except Exception:  # the profile table is read from configs/; without it compare names only
        return False
    return profile is not None and profile.name == device


@dataclass(frozen=True)
class CollectiveFit:
    """α and β of one op in one scope, with the fit's relative residuals."""

    op: str
    scope: str
    alpha_s: float
    beta_gbps: float
    residuals: tuple[float, ...]

    def time_s(self, nbytes: float, n: int) -> float:
        return ring_steps(self.op, n) * self.alpha_s + bus_factor(self.op, n) * nbytes / (self.beta_gbps * 1e9)

    def busbw_gbps(self, nbytes: float, n: int) -> float:
        return nbytes / self.time_s(nbytes, n) / 1e9 * bus_factor(self.op, n)

    @property
    def rms_error(self) -> float:
        return math.sqrt(statistics.fmean(r * r for r in self.residuals)) if self.residuals else 0.0


def _collective_points(rows: Iterable[Mapping[str, Any]], op: str) -> list[tuple[float, int, float]]:
    points = []
    for row in rows:
        if row_kind(row) != op and row.get("op") != op:
            continue
        size, time_us = row.get("bytes"), row.get("time_us")
        n = row.get("group_size") or row.get("world_size")
        if size is None or time_us is None or not n or time_us <= 0 or size <= 0 or row.get("passed") is False:
            continue
        points.append((float(size), int(n), float(time_us) * 1e-6))
    return points


def fit_collective(rows: Iterable[Mapping[str, Any]], op: str, *, scope: str = "intra") -> CollectiveFit:
    """Least-squares α (s) and β (GB/s, bus bandwidth) of `op` from its measured rows."""
    points = _collective_points(rows, op)
    if len({(s, n) for s, n, _ in points}) < 2:
        raise ConfigError(f"project.calibrate: {op} needs rows at two or more sizes to fit α and β, got {len(points)}")
    steps = np.array([ring_steps(op, n) for _, n, _ in points], dtype=float)
    volume = np.array([bus_factor(op, n) * s / 1e9 for s, n, _ in points], dtype=float)
    times = np.array([t for _, _, t in points], dtype=float)
    design = np.column_stack([steps / times, volume / times])
    (alpha, inv_beta), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
    if alpha < 0 or not np.any(steps):
        alpha = 0.0
        inv_beta = float(np.linalg.lstsq((volume / times)[:, None], np.ones_like(times), rcond=None)[0][0])
    if inv_beta <= 0:
        raise ConfigError(f"project.calibrate: the {op} rows do not grow with the message size; no bandwidth to fit")
    fit = CollectiveFit(op, scope, float(alpha), float(1 / inv_beta), ())
    residuals = tuple((fit.time_s(s, n) - t) / t for s, n, t in points)
    return dataclasses.replace(fit, residuals=residuals)


@dataclass(frozen=True)
class GemmFit:
    """Measured GEMM rates of one dtype."""

    dtype: str
    table: tuple[tuple[float, float], ...]
    """(FLOPs, median TFLOP/s) per shape, by FLOPs."""
    best_tflops: float
    fraction_of_peak: float | None
    fixed_s: float
    """t₀ of t = F / best + t₀, least squares over the shapes."""
    residuals: tuple[float, ...]


def fit_gemm(rows: Iterable[Mapping[str, Any]], *, dtype: str, peak_tflops: float | None = None) -> GemmFit:
    """The GEMM table and efficiency of `dtype` from `harness bench gemm` rows (per shape, the
    slowest rank's median, as the benchmark's own summary takes a node's slowest GPU)."""
    dtype = canonical_dtype(dtype)
    per_shape: dict[tuple[int, int, int], float] = {}
    for row in rows:
        if row_kind(row) != "gemm" or canonical_dtype(row.get("dtype", dtype)) != dtype or not row.get("tflops"):
            continue
        key = (int(row["m"]), int(row["n"]), int(row["k"]))
        per_shape[key] = min(per_shape.get(key, math.inf), float(row["tflops"]))
    if not per_shape:
        raise ConfigError(f"project.calibrate: no gemm rows of dtype {dtype} to fit")
    table = tuple(sorted((2.0 * m * n * k, tflops) for (m, n, k), tflops in per_shape.items()))
    best = max(t for _, t in table)
    flops = np.array([f for f, _ in table])
    times = flops / (np.array([t for _, t in table]) * 1e12)
    fixed = float(max(0.0, np.median(times - flops / (best * 1e12))))
    residuals = tuple(float(((f / (best * 1e12) + fixed) - t) / t) for f, t in zip(flops, times, strict=True))
    fraction = best / peak_tflops if peak_tflops else None
    return GemmFit(dtype, table, best, fraction, fixed, residuals)


def fit_step_scale(
    rows: Iterable[Mapping[str, Any]], predict_s: Callable[[Mapping[str, Any]], float],
) -> tuple[float, tuple[float, ...]]:  # fmt: skip
    """The median of measured / modelled step time over the measured (not warm-up) train rows, and
    the residuals of the scaled model."""
    pairs = [(float(r["step_time_s"]), predict_s(r)) for r in rows
             if row_kind(r) == "train" and r.get("step_time_s") and not r.get("warmup")]  # fmt: skip
    if not pairs:
        raise ConfigError("project.calibrate: no measured train steps (rows with step_time_s, not warm-up)")
    scale = statistics.median(m / p for m, p in pairs)
    return scale, tuple((scale * p - m) / m for m, p in pairs)


@dataclass(frozen=True)
class Calibration:
    """Everything fitted from measured rows; `apply` puts it on a Device."""

    collectives: Mapping[tuple[str, str], CollectiveFit] = field(default_factory=dict)
    gemm: Mapping[str, GemmFit] = field(default_factory=dict)
    compute_scale: float = 1.0

    def apply(self, device: Device) -> Device:
        return dataclasses.replace(
            device,
            collectives={**device.collectives,
                         **{key: AlphaBeta(f.alpha_s, f.beta_gbps) for key, f in self.collectives.items()}},
            gemm_table={**device.gemm_table, **{d: g.table for d, g in self.gemm.items()}},
            compute_scale=device.compute_scale * self.compute_scale,
        )  # fmt: skip

    def residuals(self) -> dict[str, tuple[float, ...]]:
        """Per fitted item ('all_reduce/intra', 'gemm/bfloat16'), its relative residuals."""
        out = {f"{op}/{scope}": fit.residuals for (op, scope), fit in self.collectives.items()}
        out.update({f"gemm/{dtype}": fit.residuals for dtype, fit in self.gemm.items()})
        return out


def calibrate(
    rows: Sequence[Mapping[str, Any]], *, device: str | None = None, kinds: Sequence[str] = CALIBRATION_KINDS,
    peak_tflops: Mapping[str, float] | None = None,
) -> Calibration:  # fmt: skip
    """Fit every collective and GEMM dtype the rows hold. The scope of a collective is 'inter' when
    its run spanned several nodes (`nodes` > 1, from `load_run`), else 'intra'."""
    check_rows(rows, kinds=kinds, device=device)
    collectives = {}
    for op in COLLECTIVE_OPS:
        for scope in ("intra", "inter"):
            subset = [r for r in rows if row_kind(r) == op and (int(r.get("nodes") or 1) > 1) == (scope == "inter")]
            if subset:
                collectives[(op, scope)] = fit_collective(subset, op, scope=scope)
    gemm = {}
    for dtype in sorted({canonical_dtype(r["dtype"]) for r in rows if row_kind(r) == "gemm" and r.get("dtype")}):
        gemm[dtype] = fit_gemm(rows, dtype=dtype, peak_tflops=(peak_tflops or {}).get(dtype))
    return Calibration(collectives, gemm)


def device_from_calibration(
    calibration: Calibration, *, name: str = "cpu", memory_gib: float | None = None,
    memory_tbps: float | None = None, ranks_per_node: int = 1,
) -> Device:  # fmt: skip
    """A device known only from calibration runs (a CPU node: its profile has no peaks or network
    figures). The fitted collectives and GEMM table drive the model; link figures fall back to the
    fitted all_reduce bus bandwidth and latency so that every term has a number."""
    if not calibration.gemm:
        raise ConfigError(f"hardware={name}: a projection without datasheet figures needs gemm calibration rows")
    fits = list(calibration.collectives.values())
    if not fits:
        raise ConfigError(f"hardware={name}: a projection without network figures needs collective calibration rows")

    def pick(scope: str) -> CollectiveFit:
        return calibration.collectives.get(("all_reduce", scope)) or next(
            (f for f in fits if f.scope == scope), fits[0]
        )

    intra, inter = pick("intra"), pick("inter")
    device = Device(
        name=name, peak_tflops={}, memory_gib=memory_gib, memory_tbps=memory_tbps, nvlink_gbps=intra.beta_gbps,
        nvlink_domain=ranks_per_node, nic_gbps=inter.beta_gbps, latency_intra_s=intra.alpha_s,
        latency_inter_s=inter.alpha_s, intra_efficiency=1.0, inter_efficiency=1.0,
    )  # fmt: skip
    return calibration.apply(device)
