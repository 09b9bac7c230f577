"""Telemetry beside every number: a background sampler per rank while a case is timed.

Sources sit behind one small interface (`read()` returns one reading as a flat dict):
- `NvmlSource`: power, SM and memory clocks, temperature, utilisation, clock-event (throttle)
  reasons and uncorrected ECC errors, through nvidia-ml-py;
- `OsSource`: CPU frequency, load, utilisation and temperature where the OS gives them.
`make_source` picks NVML on CUDA devices and falls back to the OS source (saying why, once) when
NVML is missing; a failing reading never stops a run. Unit tests pass a fake NVML module in.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
from typing import Any, Protocol

from harness.devices import nvml_handle

# NVML clock-event reason bits that mean the GPU is held back (not idle, not app clocks).
THROTTLE_BITS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}


class Source(Protocol):
    """One reading of the device's counters."""

    kind: str

    def read(self) -> dict[str, Any]: ...


class NvmlSource:
    """Readings of one GPU through NVML."""

    kind = "nvml"

    def __init__(self, index: int, nvml: Any | None = None, uuid: str | None = None) -> None:
        if nvml is None:
            import pynvml as nvml  # the optional dependency; ImportError means no NVML

        self.nvml = nvml
        nvml.nvmlInit()
        self.handle = nvml_handle(nvml, uuid, index)
        self.ecc_start = self._ecc()

    def _ecc(self) -> int | None:
        nvml = self.nvml
        try:
            kind, counter = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
            return int(nvml.nvmlDeviceGetTotalEccErrors(self.handle, kind, counter))
        except Exception:  # ECC off or not supported on this board
            return None

    def read(self) -> dict[str, Any]:
        nvml, handle = self.nvml, self.handle
        reading: dict[str, Any] = {}
        calls = {
            "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
            "temp_c": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "util_pct": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "reasons": lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle),
        }
        for key, call in calls.items():
            with contextlib.suppress(Exception):
                reading[key] = call()
        ecc = self._ecc()
        if ecc is not None and self.ecc_start is not None:
            reading["ecc_uncorrected"] = ecc - self.ecc_start
        return reading


class OsSource:
    """Readings of the host CPU."""

    kind = "os"

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def read(self) -> dict[str, Any]:
        psutil = self.psutil
        reading: dict[str, Any] = {"load_1m": os.getloadavg()[0], "cpu_util_pct": psutil.cpu_percent(interval=None)}
        with contextlib.suppress(Exception):
            freq = psutil.cpu_freq()
            if freq and freq.current:
                reading["cpu_freq_mhz"] = float(freq.current)
        with contextlib.suppress(Exception):
            temps = [t.current for sensors in psutil.sensors_temperatures().values() for t in sensors if t.current]
            if temps:
                reading["temp_c"] = max(temps)
        return reading


def make_source(
    device_type: str, index: int = 0, nvml: Any | None = None, uuid: str | None = None
) -> tuple[Source, str | None]:
    """(source, note): NVML for CUDA devices, else the OS; the note says why NVML is not used."""
    if device_type == "cuda":
        try:
            return NvmlSource(index, nvml, uuid), None
        except Exception as exc:
            return OsSource(), f"telemetry: NVML unavailable ({type(exc).__name__}); using OS counters only"
    return OsSource(), None


def summarize(readings: list[dict[str, Any]]) -> dict[str, Any]:
    """What a row carries: the extremes and means that matter for each counter."""
    out: dict[str, Any] = {"telemetry_samples": len(readings)}

    def values(key: str) -> list[float]:
        return [float(r[key]) for r in readings if r.get(key) is not None]

    rules = {  # counter: summaries
        "power_w": ("mean", "max"),
        "sm_clock_mhz": ("min", "max"),
        "mem_clock_mhz": ("min",),
        "temp_c": ("max",),
        "util_pct": ("mean",),
        "cpu_freq_mhz": ("min", "max"),
        "cpu_util_pct": ("mean",),
        "load_1m": ("max",),
        "ecc_uncorrected": ("max",),
    }
    for key, kinds in rules.items():
        got = values(key)
        if got:
            for kind in kinds:
                value = {"mean": statistics.fmean, "min": min, "max": max}[kind](got)
                out[f"{key}_{kind}"] = round(value, 3)
    reasons = 0
    for reading in readings:
        reasons |= int(reading.get("reasons", 0) or 0)
    if any("reasons" in r for r in readings):
        names = [name for bit, name in THROTTLE_BITS.items() if reasons & bit]
        out["throttled"] = bool(names)
        out["throttle_reasons"] = names
    return out


def merge(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary for a collective from every rank's: worst case of each figure."""
    merged: dict[str, Any] = {}
    for summary in summaries:
        for key, value in summary.items():
            if key not in merged:
                merged[key] = value
            elif key.endswith(("_max", "_mean", "_samples")):  # the hottest, busiest rank
                merged[key] = max(merged[key], value)
            elif key.endswith("_min"):  # the slowest clock
                merged[key] = min(merged[key], value)
            elif key == "throttled":
                merged[key] = merged[key] or value
            elif key == "throttle_reasons":
                merged[key] = sorted(set(merged[key]) | set(value))
    return merged


class Sampler:
    """Reads a source every `interval_s` in a daemon thread between start() and stop()."""

    def __init__(self, source: Source, interval_s: float = 0.1) -> None:
        self.source = source
        self.interval_s = interval_s
        self._readings: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # a failed reading is a gap, never a failed run
            self._readings.append(self.source.read())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def start(self) -> None:
        self._readings = []
        self._stop.clear()
        self._read()
        self._thread = threading.Thread(target=self._loop, name="harness-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the summary of the readings since start()."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._read()
        return summarize(self._readings)
