"""Health checks from NVML facts (a fake NVML behind the same calls; no GPU here), and the
node and cluster checks across ranks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.accept import health
from harness.accept.checks import Check
from harness.accept.task import known_bad

# NVML call -> the state key it answers with.
CALLS = {
    "nvmlDeviceGetName": "name", "nvmlDeviceGetUUID": "uuid", "nvmlSystemGetDriverVersion": "driver",
    "nvmlSystemGetCudaDriverVersion": "cuda", "nvmlDeviceGetPersistenceMode": "persistence",
    "nvmlDeviceGetCurrPcieLinkGeneration": "gen", "nvmlDeviceGetMaxPcieLinkGeneration": "gen_max",
    "nvmlDeviceGetCurrPcieLinkWidth": "width", "nvmlDeviceGetMaxPcieLinkWidth": "width_max",
    "nvmlDeviceGetCurrentClocksEventReasons": "reasons", "nvmlDeviceGetEccMode": "ecc_mode",
    "nvmlDeviceGetRemappedRows": "remapped", "nvmlDeviceGetIndex": "index", "nvmlDeviceGetCount": "count",
}  # fmt: skip


class FakeNvml:
    """The NVML queries the health checks make, answering what a test sets (None: not supported)."""

    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC = 0, 1

    def __init__(self, **state: Any) -> None:
        self.state = {
            "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa", "driver": "580.159.04", "cuda": 13000,
            "persistence": 1, "gen": 5, "gen_max": 5, "width": 16, "width_max": 16, "reasons": 0,
            "ecc_mode": [1, 1], "ecc_volatile": 0, "ecc_aggregate": 0, "remapped": (0, 0, 0, 0), "index": 0,
            "count": 8,
        }  # fmt: skip
        self.state.update(state)

    def _get(self, key: str) -> Any:
        value = self.state[key]
        if value is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return value

    def nvmlInit(self) -> None: ...

    def __getattr__(self, name: str) -> Any:
        if name.startswith("nvmlDeviceGetHandleBy"):
            return lambda key: key
        return lambda *_args: self._get(CALLS[name])

    def nvmlDeviceGetTotalEccErrors(self, h: str, kind: int, counter: int) -> int:
        return self._get("ecc_volatile" if counter == 0 else "ecc_aggregate")


def facts(host: str = "n1", rank: int = 0, **nvml_state: Any) -> dict[str, Any]:
    f = {"host": host, "rank": rank, "local_rank": rank % 8, "local_index": rank % 8, "device_type": "cuda",
         "cores": 64, "memory_bytes": 2**40, "torch_cuda": "13.0", "visible_gpus": 8, "nvml": True}  # fmt: skip
    f.update(health.gpu_facts(FakeNvml(**nvml_state), "h"))
    return f


def status(checks: list[Check], name: str, subject: str | None = None) -> tuple[str, str]:
    (c,) = [c for c in checks if c.name == name and (subject is None or c.subject == subject)]
    return c.status, c.reason


def test_a_healthy_gpu_passes_every_check() -> None:
    checks = health.evaluate([facts()], gpus_per_node=8)
    assert {c.name: c.status for c in checks if c.scope == "gpu"} == {
        "uuid_history": "pass", "ecc": "pass", "remapped_rows": "pass", "pcie_link": "pass", "throttle": "pass",
        "persistence": "pass",
    }  # fmt: skip
    assert status(checks, "gpu_count") == ("pass", "8 GPUs")


@pytest.mark.parametrize(
    ("state", "name", "expected", "text"),
    [
        ({"ecc_volatile": 3}, "ecc", "fail", "3 uncorrected ECC errors since the driver loaded"),
        ({"ecc_aggregate": 2}, "ecc", "warn", "in the GPU's lifetime"),
        ({"ecc_mode": [0, 0]}, "ecc", "warn", "ECC is disabled"),
        ({"ecc_volatile": None, "ecc_aggregate": None}, "ecc", "n/a", "no ECC counters"),
        ({"remapped": (0, 0, 1, 0)}, "remapped_rows", "fail", "pending"),
        ({"remapped": (0, 0, 0, 1)}, "remapped_rows", "fail", "needs service"),
        ({"remapped": (5, 2, 0, 0)}, "remapped_rows", "warn", "2 rows remapped"),
        ({"remapped": None}, "remapped_rows", "n/a", "not reported"),
        ({"width": 8}, "pcie_link", "fail", "PCIe link x8, the GPU supports x16"),
        ({"gen": 1}, "pcie_link", "warn", "gen1 of gen5"),
        ({"reasons": 0x8}, "throttle", "fail", "hw_slowdown"),
        ({"reasons": 0x4}, "throttle", "warn", "sw_power_cap"),
        ({"reasons": 0x1}, "throttle", "pass", "no throttle reason"),  # idle is not throttling
        ({"persistence": 0}, "persistence", "warn", "persistence mode off"),
    ],
)
def test_gpu_fault_verdicts(state: dict, name: str, expected: str, text: str) -> None:
    got, reason = status(health.evaluate([facts(**state)]), name)
    assert got == expected and text in reason, reason


def test_a_gpu_without_nvml_fails_its_health_check_unless_skipped() -> None:
    """No GPU passes acceptance without its health read: a missing or failing NVML fails the
    `nvml` check (the five it would have read are listed n/a); accept.health=skip says so instead."""
    f = {"host": "n1", "rank": 0, "local_index": 0, "device_type": "cuda", "cores": 8, "memory_bytes": 2**35,
         "nvml": False, "nvml_error": "NVMLError_LibraryNotFound"}  # fmt: skip
    checks = health.evaluate([f])
    (nvml,) = [c for c in checks if c.name == "nvml"]
    assert nvml.status == "fail" and "LibraryNotFound" in nvml.reason and "accept.health=skip" in nvml.reason
    gpu = [c for c in checks if c.scope == "gpu" and c.name != "nvml"]
    assert len(gpu) == 5 and all(c.status == "n/a" for c in gpu)
    skipped = health.evaluate([f], health="skip")
    assert not [c for c in skipped if c.name == "nvml"]
    assert all(c.status == "n/a" and "accept.health=skip" in c.reason for c in skipped if c.scope == "gpu")


def test_a_failing_nvml_is_recorded_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    """nvmlInit raising (driver gone, no permission) on a CUDA rank: the facts say NVML failed."""

    class Broken:
        def nvmlInit(self) -> None:
            raise RuntimeError("NVML Shared Library Not Found")

    class Cuda:
        type, index = "cuda", 0

    monkeypatch.setattr(health.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(health.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    facts_ = health.collect(Cuda(), host="n1", rank=0, local_rank=0, uuid="GPU-1", nvml=Broken())  # type: ignore[arg-type]
    assert facts_["nvml"] is False and "Shared Library Not Found" in facts_["nvml_error"]
    assert [c.status for c in health.evaluate([facts_]) if c.name == "nvml"] == ["fail"]


def test_node_and_cluster_checks_across_ranks() -> None:
    ranks = [facts("n1", 0), facts("n1", 1), facts("n2", 8, driver="575.0"), facts("n3", 16)]
    ranks[3]["visible_gpus"] = 7
    ranks[3]["cores"] = 32
    checks = health.evaluate(ranks, gpus_per_node=8, known_bad={"GPU-aaaa": "run r0: ecc on n9 gpu0"})
    assert status(checks, "gpu_count", "n3") == ("fail", "7 GPUs visible, 8 expected")
    assert status(checks, "cpu_cores", "n3")[0] == "fail" and status(checks, "cpu_cores", "n1")[0] == "pass"
    state, reason = status(checks, "driver_consistent")
    assert state == "fail" and "575.0 on n2" in reason and "580.159.04 on n1, n3" in reason
    history = [c for c in checks if c.name == "uuid_history"]
    assert all(c.status == "warn" and "was flagged before: run r0" in c.reason for c in history)


def test_cpu_nodes_list_gpu_checks_as_not_applicable() -> None:
    f = {"host": "n1", "rank": 0, "local_rank": 0, "device_type": "cpu", "cores": 2, "memory_bytes": 2**34}
    checks = health.evaluate([f])
    assert status(checks, "gpu_health")[0] == "n/a" and status(checks, "gpu_count")[0] == "n/a"
    assert status(checks, "driver_consistent")[0] == "n/a"


def test_gpus_are_named_and_counted_as_nvml_sees_them() -> None:
    """Under Slurm's per-task GPU binding every rank's CUDA device is 0 and CUDA sees one GPU:
    NVML's index and count name the GPU and count the node's GPUs."""
    ranks = []
    for i in range(4):
        f = {**facts("n1", i, uuid=f"GPU-{i}", index=i, count=4), "local_index": 0, "visible_gpus": 1}
        health.name_by_nvml(f)
        ranks.append(f)
    checks = health.evaluate(ranks, gpus_per_node=4)
    assert status(checks, "gpu_count") == ("pass", "4 GPUs")
    assert sorted(c.subject for c in checks if c.name == "ecc") == ["n1 gpu0", "n1 gpu1", "n1 gpu2", "n1 gpu3"]


def test_gpu_count_is_at_least_the_gpus_the_ranks_used() -> None:
    ranks = [facts("n1", i, uuid=f"GPU-{i}") for i in range(3)]
    for f in ranks:
        f["visible_gpus"] = 1  # NVML missing the count: the distinct UUIDs still count
    assert status(health.evaluate(ranks, gpus_per_node=3), "gpu_count") == ("pass", "3 GPUs")


def test_known_bad_reads_real_acceptance_runs_only(tmp_path: Path) -> None:
    """A GPU flagged by an earlier acceptance run is remembered; one slowed or corrupted on purpose
    by a test (fault injection) is not, nor is anything from other tasks."""

    def manifest(run_id: str, task: str, uuid: str, injected: dict | None) -> None:
        flagged = [{"uuid": uuid, "check": "gemm_bfloat16_tflops_outlier", "subject": "n1/gpu0"}]
        data = {"run_id": run_id, "task": task, "status": "failed", "started_at": "2026-01-01T00:00:00Z",
                "accept": {"flagged": flagged, "fault_injection": injected}}  # fmt: skip
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "manifest.json").write_text(json.dumps(data))

    manifest("20260101T000000Z-accept-aaaaaa", "accept", "GPU-bad", None)
    manifest("20260102T000000Z-accept-bbbbbb", "accept", "GPU-slowed-on-purpose", {"slow_rank": 0})
    manifest("20260103T000000Z-accept-cccccc", "bench", "GPU-other-task", None)
    found = known_bad(str(tmp_path))
    assert list(found) == ["GPU-bad"] and "20260101T000000Z-accept-aaaaaa" in found["GPU-bad"]
