"""Calibration: fit the cost model's constants to what this harness measured.

- Collectives (`harness bench all_reduce|all_gather|reduce_scatter|sendrecv` rows: op, bytes,
  time_us, group_size): least squares of t = steps(n)·α + bus_factor(n)·S/β per op, each row
  weighted by 1/t so that small and large messages count alike; α ≥ 0.
- GEMMs (`harness bench gemm` rows: m, n, k, dtype, tflops): the measured (FLOPs, TFLOP/s) table
  the compute model interpolates, the best rate, its fraction of the peak, and the fixed cost of
  t = F/best + t₀ fitted over the shapes.
- Training steps (`harness train` rows: step_time_s, the median after warm-up per run): the ratio
  of measured to modelled compute time, applied to every compute term (`Device.compute_scale`;
  harness.perf.measured models the runs).

Residuals are relative: (model − measured) / measured. Runs are read through harness.results; a
damaged run (corrupt manifest or rows), one that did not end ok, and rows of another benchmark or
device than asked are refused with one line (ConfigError).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.hardware import profile_for
from harness.perf.comm import ring_steps
from harness.perf.device import AlphaBeta, Device, canonical_dtype
from harness.results import DamagedRun, read_manifest, read_rows, read_run, row_kind
from harness.units import bus_factor

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "sendrecv", "all_to_all", "broadcast", "reduce")
CALIBRATION_KINDS = (*COLLECTIVE_OPS, "gemm", "train", "train_summary")
"""Row kinds a calibration run may hold (a train run's summary row is read past, not fitted)."""


@dataclass(frozen=True)
class MeasuredRun:
    """A run directory as calibration reads it (through harness.results): its manifest and its
    rows, each row given the run's device name and type, its node count and, on a CPU, the threads
    one rank used (`device_name`, `device_type`, `nodes`, `threads_used`), for the checks below."""

    path: str
    manifest: Mapping[str, Any]
    rows: tuple[dict[str, Any], ...]

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def world_size(self) -> int:
        return int(self.manifest.get("world_size") or 1)


def read_measured(run_dir: str | Path, *, key: str = "project.calibrate") -> MeasuredRun:
    """The run at `run_dir`; ConfigError (one line, naming `key`) when it is not a run directory,
    is damaged (a corrupt manifest or rows file, a file it lists missing), did not end ok, or has
    no rows."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{key}: {run_dir} is not a run directory")
    try:
        manifest = read_manifest(run_dir)
    except DamagedRun as error:
        raise ConfigError(f"{key}: {run_dir} is damaged ({error}): corrupt file") from None
    damage = read_run(run_dir).damage
    if damage:
        raise ConfigError(f"{key}: {run_dir} is damaged ({damage}): corrupt file")
    if manifest["status"] != "ok":
        why = manifest.get("error") or "no reason given"
        raise ConfigError(f"{key}: {run_dir} ended {manifest['status']} ({why}); calibrate on runs that passed")
    rows = read_rows(run_dir)
    if not rows:
        raise ConfigError(f"{key}: {run_dir} has no rows to fit")
    devices = [d for d in manifest.get("devices") or [] if isinstance(d, dict)]
    names = sorted({str(d.get("name")) for d in devices if d.get("name")})
    if len(names) > 1:
        raise ConfigError(f"{key}: {run_dir} mixes devices ({', '.join(names)}); calibrate on one kind")
    hosts = {h for h in manifest.get("hosts") or [] if isinstance(h, str)} | {
        str(d["host"]) for d in devices if d.get("host")
    }
    device_type = devices[0].get("type") if devices else None
    threads = [int(d["threads_used"]) for d in devices if isinstance(d.get("threads_used"), int)]
    extra = {
        "device_name": names[0] if names else None,
        "device_type": device_type,
        "nodes": max(1, len(hosts)),
        "threads_used": min(threads) if threads and device_type == "cpu" else None,
    }
    annotated = tuple({**row, **{k: v for k, v in extra.items() if k not in row}} for row in rows)
    return MeasuredRun(str(run_dir), manifest, annotated)


FITTED = "bench runs of gemm, all_reduce, all_gather, reduce_scatter or sendrecv, and train runs"


def check_rows(
    rows: Iterable[Mapping[str, Any]], *, kinds: Sequence[str] = CALIBRATION_KINDS, device: str | None = None,
    source: str = "a run", key: str = "project.calibrate",
) -> None:  # fmt: skip
    """ConfigError (one line) for a row of another kind than `kinds` or of another device than `device`
    (compared with the row's device_name, or the profile that name matches)."""
    for index, row in enumerate(rows, 1):
        kind = row_kind(row)
        if kind not in kinds:
            raise ConfigError(f"{key}: {source} holds {kind!r} rows (row {index}); calibration takes {FITTED}")
        if device and not _same_device(row, device):
            raise ConfigError(
                f"{key}: {source} was measured on {row.get('device_name')!r}, not on {device!r}; "
                "calibrate with runs of the hardware you project"
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
        return _rms(self.residuals)


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
    """t₀ of t = F / best + t₀, least squares of the relative error over the shapes."""
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
    # t0 by least squares of the relative error (weights 1/t), as the collectives: the large shapes'
    # absolute gaps would otherwise make a fixed cost that the small shapes' own times refute
    weights = 1 / times**2
    fixed = float(max(0.0, np.sum(weights * (times - flops / (best * 1e12))) / np.sum(weights)))
    residuals = tuple(float(((f / (best * 1e12) + fixed) - t) / t) for f, t in zip(flops, times, strict=True))
    fraction = best / peak_tflops if peak_tflops else None
    return GemmFit(dtype, table, best, fraction, fixed, residuals)


def fit_compute_scale(points: Sequence[tuple[float, float, float]]) -> tuple[float, tuple[float, ...]]:
    """The factor k of measured = k·compute + rest over training runs, from (measured step s,
    modelled compute s, modelled rest s) per run: the median of (measured − rest) / compute, and
    the relative residuals of the scaled model. The rest (communication, optimizer) keeps its own
    calibration; only compute is scaled."""
    if not points:
        raise ConfigError("project.calibrate: no measured train steps (rows with step_time_s, not warm-up)")
    ratios = []
    for measured, compute, rest in points:
        if compute <= 0 or measured <= rest:
            raise ConfigError(
                f"project.calibrate: a measured step of {measured:.3g} s leaves no time for the modelled compute "
                f"({rest:.3g} s of communication and optimizer alone); check the run's layout and the collectives' fit"
            )
        ratios.append((measured - rest) / compute)
    scale = statistics.median(ratios)
    return scale, tuple((scale * c + r - m) / m for m, c, r in points)


@dataclass(frozen=True)
class Calibration:
    """Everything fitted from measured rows; `apply` puts it on a Device."""

    collectives: Mapping[tuple[str, str], CollectiveFit] = field(default_factory=dict)
    gemm: Mapping[str, GemmFit] = field(default_factory=dict)
    compute_scale: float = 1.0
    """Measured / modelled compute time of training steps (`fit_compute_scale`); 1 without train runs."""
    compute_residuals: tuple[float, ...] = ()
    """Relative residuals of the scaled model per train run."""
    gemm_threads: int | None = None
    """CPU threads one rank used in the gemm runs (None on GPUs): a CPU rank's compute time is taken
    as inversely proportional to its threads when a train run used another count."""

    def apply(self, device: Device) -> Device:
        """This calibration on `device`: fitted collectives replace its α-β, the GEMM table its efficiency curve."""
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
        if self.compute_residuals:
            out["train/compute_scale"] = self.compute_residuals
        return out

    def to_rows(self) -> list[dict[str, Any]]:
        """One row (kind `calibration`) per fitted item: its figures, points and residuals."""

        def errors(residuals: Sequence[float]) -> dict[str, Any]:
            return {"points": len(residuals), "rms_error": _rms(residuals),
                    "max_abs_error": max((abs(r) for r in residuals), default=0.0)}  # fmt: skip

        rows = [{"item": f"{op}/{scope}", "alpha_us": fit.alpha_s * 1e6, "beta_gbps": fit.beta_gbps,
                 **errors(fit.residuals)} for (op, scope), fit in self.collectives.items()]  # fmt: skip
        rows += [{"item": f"gemm/{dtype}", "best_tflops": fit.best_tflops, "fraction_of_peak": fit.fraction_of_peak,
                  "fixed_us": fit.fixed_s * 1e6, "threads_used": self.gemm_threads, **errors(fit.residuals)}
                 for dtype, fit in self.gemm.items()]  # fmt: skip
        if self.compute_residuals:
            rows.append({"item": "train/compute_scale", "compute_scale": self.compute_scale,
                         **errors(self.compute_residuals)})  # fmt: skip
        return [{"kind": "calibration", "passed": True, **row} for row in rows]


def _rms(residuals: Sequence[float]) -> float:
    return math.sqrt(statistics.fmean(r * r for r in residuals)) if residuals else 0.0


def calibrate(
    rows: Sequence[Mapping[str, Any]], *, device: str | None = None, kinds: Sequence[str] = CALIBRATION_KINDS,
    peak_tflops: Mapping[str, float] | None = None,
) -> Calibration:  # fmt: skip
    """Fit every collective and GEMM dtype the rows hold. The scope of a collective is 'inter' when
    its run spanned several nodes (`nodes` > 1, from `read_measured`), else 'intra'."""
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
    threads = [int(r["threads_used"]) for r in rows if row_kind(r) == "gemm" and r.get("threads_used")]
    return Calibration(collectives, gemm, gemm_threads=statistics.median_low(threads) if threads else None)


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
