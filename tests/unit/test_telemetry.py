"""The telemetry sampler, with a fake NVML behind the source interface (no GPU here)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from harness import telemetry


class FakeNvml:
    """The few pynvml calls NvmlSource makes, with readings a test controls."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC = 1, 0

    def __init__(self, readings: list[dict], ecc: list[int] | None = None) -> None:
        self.readings = readings
        self.i = 0
        self.ecc = ecc

    def _now(self) -> dict:
        return self.readings[min(self.i, len(self.readings) - 1)]

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        return self._now()["mw"]

    def nvmlDeviceGetClockInfo(self, handle: str, which: int) -> int:
        return self._now()["sm"] if which == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        return self._now()["temp"]

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(gpu=100, memory=40)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: str) -> int:
        reasons = self._now()["reasons"]
        self.i += 1
        return reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: str, kind: int, counter: int) -> int:
        if self.ecc is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.ecc[min(self.i, len(self.ecc) - 1)]


def test_nvml_summary_of_a_throttled_run() -> None:
    fake = FakeNvml(
        [
            {"mw": 650_000, "sm": 1980, "temp": 61, "reasons": 0x1},  # idle: not throttling
            {"mw": 700_000, "sm": 1755, "temp": 74, "reasons": 0x4},  # software power cap
            {"mw": 690_000, "sm": 1410, "temp": 86, "reasons": 0x40},  # hardware thermal slowdown
        ],
        ecc=[3, 3, 5],
    )
    source = telemetry.NvmlSource(0, nvml=fake)
    summary = telemetry.summarize([source.read() for _ in range(3)])
    assert summary["power_w_max"] == 700.0 and summary["power_w_mean"] == pytest.approx(680.0)
    assert (summary["sm_clock_mhz_min"], summary["sm_clock_mhz_max"]) == (1410, 1980)
    assert summary["temp_c_max"] == 86 and summary["mem_clock_mhz_min"] == 2619
    assert summary["throttled"] is True
    assert summary["throttle_reasons"] == ["sw_power_cap", "hw_thermal"]
    assert summary["ecc_uncorrected_max"] == 2  # 3 at the start, 5 at the end


def test_idle_gpu_is_not_throttled_and_ecc_may_be_unsupported() -> None:
    source = telemetry.NvmlSource(0, nvml=FakeNvml([{"mw": 90_000, "sm": 345, "temp": 30, "reasons": 0x1}]))
    summary = telemetry.summarize([source.read()])
    assert summary["throttled"] is False and summary["throttle_reasons"] == []
    assert "ecc_uncorrected_max" not in summary


def test_missing_nvml_falls_back_with_a_note() -> None:
    class Broken:
        def nvmlInit(self) -> None:
            raise RuntimeError("NVML Shared Library Not Found")

    source, note = telemetry.make_source("cuda", 0, nvml=Broken())
    assert source.kind == "os"
    assert note == "telemetry: NVML unavailable (RuntimeError); using OS counters only"


def test_sampler_runs_in_the_background() -> None:
    class Counting:
        kind = "count"

        def __init__(self) -> None:
            self.n = 0

        def read(self) -> dict:
            self.n += 1
            return {"power_w": float(self.n)}

    source = Counting()
    sampler = telemetry.Sampler(source, interval_s=0.01)
    sampler.start()
    time.sleep(0.2)
    summary = sampler.stop()
    assert summary["telemetry_samples"] >= 5  # one at start, one at stop, the rest from the thread
    assert summary["power_w_max"] == summary["telemetry_samples"]


def test_a_failing_reading_is_a_gap_not_a_crash() -> None:
    class Flaky:
        kind = "flaky"

        def read(self) -> dict:
            raise OSError("sensor gone")

    sampler = telemetry.Sampler(Flaky(), interval_s=0.01)
    sampler.start()
    time.sleep(0.05)
    assert sampler.stop() == {"telemetry_samples": 0}


def test_merge_keeps_the_worst_rank() -> None:
    merged = telemetry.merge([
        {"power_w_max": 600.0, "sm_clock_mhz_min": 1900, "throttled": False, "throttle_reasons": []},
        {"power_w_max": 700.0, "sm_clock_mhz_min": 1400, "throttled": True, "throttle_reasons": ["hw_thermal"]},
    ])  # fmt: skip
    assert merged == {"power_w_max": 700.0, "sm_clock_mhz_min": 1400, "throttled": True,
                      "throttle_reasons": ["hw_thermal"]}  # fmt: skip
