"""Health checks before the benchmarks (seconds): what each rank reads of its device and host
(`collect`), and the verdicts rank 0 draws from every rank's facts (`evaluate`).

GPU facts come from NVML, behind the small `nvml` argument (the pynvml module, or a fake in
unit tests). A fact NVML does not give on this board is None, and its check is listed as not
applicable with the reason, never passed silently. DCGM diag level 1 and REFERENCE §5 set the
list: GPU count, UUIDs, driver and CUDA versions, ECC and remapped rows, PCIe link, throttle
reasons, persistence mode; on CPU nodes the core count and memory.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from typing import Any

import psutil
import torch

from harness.accept.checks import Check, where
from harness.devices import nvml_handle
from harness.telemetry import THROTTLE_BITS

HW_THROTTLE = {"hw_slowdown", "hw_thermal", "hw_power_brake"}


def _try(call: Any, *args: Any) -> Any:
    with contextlib.suppress(Exception):
        return call(*args)
    return None


def gpu_facts(nvml: Any, handle: Any) -> dict[str, Any]:
    """What NVML says of one GPU; None where the board does not say."""
    n = nvml
    remapped = _try(n.nvmlDeviceGetRemappedRows, handle)  # (correctable, uncorrectable, pending, failure)
    ecc_mode = _try(n.nvmlDeviceGetEccMode, handle)  # (current, pending)
    kind = getattr(n, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
    volatile, aggregate = getattr(n, "NVML_VOLATILE_ECC", 0), getattr(n, "NVML_AGGREGATE_ECC", 1)
    # The clocks-event call replaced the deprecated throttle-reasons one (telemetry reads the same).
    reasons = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
    return {
        "nvml_index": _try(n.nvmlDeviceGetIndex, handle),
        "nvml_gpus": _try(n.nvmlDeviceGetCount),
        "nvml_name": _try(n.nvmlDeviceGetName, handle),
        "uuid": _try(n.nvmlDeviceGetUUID, handle),
        "driver": _try(n.nvmlSystemGetDriverVersion),
        "cuda_driver": _try(n.nvmlSystemGetCudaDriverVersion),
        "persistence": _try(n.nvmlDeviceGetPersistenceMode, handle),
        "pcie_gen": _try(n.nvmlDeviceGetCurrPcieLinkGeneration, handle),
        "pcie_gen_max": _try(n.nvmlDeviceGetMaxPcieLinkGeneration, handle),
        "pcie_width": _try(n.nvmlDeviceGetCurrPcieLinkWidth, handle),
        "pcie_width_max": _try(n.nvmlDeviceGetMaxPcieLinkWidth, handle),
        "throttle_reasons": _try(reasons, handle),
        "ecc_enabled": None if ecc_mode is None else bool(ecc_mode[0]),
        "ecc_volatile_uncorrected": _try(n.nvmlDeviceGetTotalEccErrors, handle, kind, volatile),
        "ecc_aggregate_uncorrected": _try(n.nvmlDeviceGetTotalEccErrors, handle, kind, aggregate),
        "remapped_rows": None if remapped is None else [int(x) for x in remapped],
    }


def name_by_nvml(facts: dict[str, Any]) -> None:
    """Under Slurm's per-task GPU binding every rank sees its GPU as CUDA device 0: name and
    count GPUs as NVML does (PCI order, all GPUs of the node), as admins see them in nvidia-smi."""
    if facts.get("nvml_index") is not None:
        facts["local_index"] = facts["nvml_index"]
    if facts.get("nvml_gpus") is not None:
        facts["visible_gpus"] = facts["nvml_gpus"]


def collect(device: torch.device, *, host: str, rank: int, local_rank: int, uuid: str | None,
            nvml: Any | None = None) -> dict[str, Any]:  # fmt: skip
    """This rank's facts: its device through NVML (GPU), and its host (cores, memory)."""
    facts: dict[str, Any] = {
        "host": host, "rank": rank, "local_rank": local_rank, "device_type": device.type,
        "cores": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total,
        "torch_cuda": torch.version.cuda,
    }  # fmt: skip
    if device.type != "cuda":
        facts["local_index"] = local_rank  # a CPU rank is placed by its index on the node
        return facts
    facts["local_index"] = device.index
    facts["visible_gpus"] = torch.cuda.device_count()
    facts["name"] = torch.cuda.get_device_name(device)
    facts["uuid"] = uuid
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()

        facts.update(gpu_facts(nvml, nvml_handle(nvml, uuid, device.index or 0)))
        facts["uuid"] = facts.get("uuid") or uuid
        name_by_nvml(facts)
        facts["nvml"] = True
    except Exception as exc:  # no NVML library or no permission: GPU health is not applicable
        facts["nvml"] = False
        facts["nvml_error"] = f"{type(exc).__name__}: {exc}"
    return facts


GPU_HEALTH = ("ecc", "remapped_rows", "pcie_link", "throttle", "persistence")
HEALTH_MODES = ("on", "skip")


def _gpu_checks(f: dict[str, Any], known_bad: dict[str, str], health: str = "on") -> list[Check]:
    place = where(f, f["rank"], "cuda")
    out: list[Check] = []

    def add(name: str, status: str, reason: str, value: Any = None) -> None:
        out.append(Check(name, status=status, reason=reason, value=value, **place))

    if health == "skip":
        for name in GPU_HEALTH:
            add(name, "n/a", "not checked: accept.health=skip")
        return out
    if not f.get("nvml"):
        # A GPU whose health cannot be read must not pass as healthy: the run fails here unless
        # the admin says accept.health=skip.
        add("nvml", "fail", f"NVML failed ({f.get('nvml_error', 'unknown')}): ECC, remapped rows, PCIe, throttle "
            "and persistence cannot be checked; install nvidia-ml-py and make the driver's libnvidia-ml.so.1 "
            "visible, or set accept.health=skip")  # fmt: skip
        for name in GPU_HEALTH:
            add(name, "n/a", "NVML not available")
        return out
    uuid = f.get("uuid")
    if uuid in known_bad:
        add("uuid_history", "warn", f"{uuid} was flagged before: {known_bad[uuid]}", uuid)
    else:
        add("uuid_history", "pass", "not flagged in earlier acceptance runs", uuid)
    vol, agg = f.get("ecc_volatile_uncorrected"), f.get("ecc_aggregate_uncorrected")
    if f.get("ecc_enabled") is False:
        add("ecc", "warn", "ECC is disabled")
    elif vol is None:
        add("ecc", "n/a", "NVML gives no ECC counters on this board")
    elif vol > 0:
        add("ecc", "fail", f"{vol} uncorrected ECC errors since the driver loaded", vol)
    elif agg:
        add("ecc", "warn", f"{agg} uncorrected ECC errors in the GPU's lifetime (none since the driver loaded)", agg)
    else:
        add("ecc", "pass", "no uncorrected ECC errors", 0)
    rows = f.get("remapped_rows")
    if rows is None:
        add("remapped_rows", "n/a", "row remapping is not reported on this board")
    elif rows[3]:
        add("remapped_rows", "fail", "a row remapping failed: the GPU needs service", rows)
    elif rows[2]:
        add("remapped_rows", "fail", "a row remap is pending: reset the GPU before use", rows)
    elif rows[1]:
        add("remapped_rows", "warn", f"{rows[1]} rows remapped for uncorrectable errors", rows)
    else:
        add("remapped_rows", "pass", "no pending or failed remaps", rows)
    gen, gen_max, width, width_max = (f.get(k) for k in ("pcie_gen", "pcie_gen_max", "pcie_width", "pcie_width_max"))
    if None in (gen, gen_max, width, width_max):
        add("pcie_link", "n/a", "NVML gives no PCIe link state")
    elif width < width_max:
        add("pcie_link", "fail", f"PCIe link x{width}, the GPU supports x{width_max}", f"gen{gen} x{width}")
    elif gen < gen_max:  # the link drops its generation when idle to save power
        add("pcie_link", "warn", f"PCIe gen{gen} of gen{gen_max} (also seen when the GPU idles)", f"gen{gen} x{width}")
    else:
        add("pcie_link", "pass", f"gen{gen} x{width}", f"gen{gen} x{width}")
    reasons = f.get("throttle_reasons")
    names = sorted(name for bit, name in THROTTLE_BITS.items() if reasons and reasons & bit)
    if reasons is None:
        add("throttle", "n/a", "NVML gives no clock-event reasons")
    elif HW_THROTTLE & set(names):
        add("throttle", "fail", f"clocks held back by {', '.join(names)}", names)
    elif names:
        add("throttle", "warn", f"clocks held back by {', '.join(names)}", names)
    else:
        add("throttle", "pass", "no throttle reason active", [])
    persistence = f.get("persistence")
    if persistence is None:
        add("persistence", "n/a", "NVML gives no persistence mode")
    else:
        add("persistence", "pass" if persistence else "warn",
            "persistence mode on" if persistence else "persistence mode off: every job pays driver start-up",
            bool(persistence))  # fmt: skip
    return out


def _node_checks(by_host: dict[str, list[dict]], gpus_per_node: int | None, cores_per_node: int | None) -> list[Check]:
    out: list[Check] = []
    max_cores = max(f[0]["cores"] or 0 for f in by_host.values())
    max_mem = max(f[0]["memory_bytes"] or 0 for f in by_host.values())
    for host, facts in sorted(by_host.items()):
        where = {"scope": "node", "subject": host, "host": host}
        gpu = facts[0]["device_type"] == "cuda"
        # GPUs on the node: what NVML (or CUDA) sees, and at least the distinct GPUs the ranks used.
        used = len({f.get("uuid") or f["rank"] for f in facts})
        count = max([used, *(f.get("visible_gpus") or 0 for f in facts)]) if gpu else 0
        if gpus_per_node is None:
            out.append(Check("gpu_count", status="n/a", reason="no expected count (accept.gpus_per_node)", value=count,
                             **where))  # fmt: skip
        elif count != gpus_per_node:
            out.append(Check("gpu_count", status="fail", reason=f"{count} GPUs visible, {gpus_per_node} expected",
                             value=count, threshold=gpus_per_node, **where))  # fmt: skip
        else:
            out.append(Check("gpu_count", status="pass", reason=f"{count} GPUs", value=count, **where))
        if not gpu:
            out.append(Check("gpu_health", status="n/a", reason="no GPU on this node: ECC, PCIe, throttle and "
                             "persistence checks do not apply", **where))  # fmt: skip
        cores = facts[0]["cores"]
        want = cores_per_node or max_cores
        source = "expected (accept.cores_per_node)" if cores_per_node else "on the largest node of this run"
        status = "pass" if cores >= want else "fail"
        out.append(Check("cpu_cores", status=status, reason=f"{cores} cores, {want} {source}", value=cores,
                         threshold=want, unit="cores", **where))  # fmt: skip
        mem = facts[0]["memory_bytes"]
        status = "pass" if mem >= 0.95 * max_mem else "warn"
        reason = f"{mem / 2**30:.1f} GiB of {max_mem / 2**30:.1f} GiB (largest node)"
        out.append(Check("memory", status=status, reason=reason, value=mem, unit="B", **where))
    return out


def _cluster_checks(facts: list[dict]) -> list[Check]:
    out = []
    labels = {"driver": "driver version", "cuda_driver": "CUDA driver version", "torch_cuda": "torch CUDA"}
    for key, label in labels.items():
        values: dict[str, list[str]] = defaultdict(list)
        for f in facts:
            if f.get(key) is not None:
                values[str(f[key])].append(f["host"])
        if not values:
            out.append(Check(f"{key}_consistent", "cluster", "cluster", "n/a", f"no {label} reported"))
        elif len(values) > 1:
            parts = "; ".join(f"{v} on {', '.join(sorted(set(h)))}" for v, h in sorted(values.items()))
            out.append(Check(f"{key}_consistent", "cluster", "cluster", "fail", f"{label}s differ: {parts}"))
        else:
            (value,) = values
            out.append(Check(f"{key}_consistent", "cluster", "cluster", "pass", f"{label} {value} everywhere", value))
    return out


def evaluate(facts: list[dict], *, gpus_per_node: int | None = None, cores_per_node: int | None = None,
             known_bad: dict[str, str] | None = None, health: str = "on") -> list[Check]:  # fmt: skip
    """Every health check from every rank's facts (`health`: on, or skip the GPU checks)."""
    by_host: dict[str, list[dict]] = defaultdict(list)
    for f in sorted(facts, key=lambda f: f["rank"]):
        by_host[f["host"]].append(f)
    checks = _node_checks(by_host, gpus_per_node, cores_per_node)
    for f in facts:
        if f["device_type"] == "cuda":
            checks += _gpu_checks(f, known_bad or {}, health)
    return checks + _cluster_checks(facts)
