"""Devices: which one to use, which data types it has, and what it is (for the manifest).

Capabilities follow the hardware: TF32 and BF16 need NVIDIA compute capability 8.0 (Ampere),
FP8 matmul needs 8.9 (Ada/Hopper). On CPU, float16 is offered (torch computes it, slowly) but is not
in the default lists; TF32 and FP8 matmul units do not exist there, so both are refused.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any

import torch

from harness.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")

# name -> (storage dtype, bytes per element). tf32 is float32 storage with TF32 tensor-core math.
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "float64": (torch.float64, 8),
    "float32": (torch.float32, 4),
    "tf32": (torch.float32, 4),
    "bfloat16": (torch.bfloat16, 2),
    "float16": (torch.float16, 2),
    "float8": (torch.float8_e4m3fn, 1),
    "int32": (torch.int32, 4),
    "int64": (torch.int64, 8),
}


def resolve_device_type(requested: str) -> str:
    """'auto' -> 'cuda' or 'cpu'; refuses 'cuda' without a GPU and unknown names."""
    if requested not in DEVICE_CHOICES:
        raise ConfigError(f"device={requested!r} is not a device; choices: {', '.join(DEVICE_CHOICES)}")
    has_cuda = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if requested == "cuda" and not has_cuda:
        raise ConfigError("device=cuda but no CUDA GPU is visible here; choices on this machine: auto, cpu")
    return requested


def device_dtypes(device_type: str) -> tuple[str, ...]:
    """Data types the device can compute with (before any benchmark's own limits)."""
    if device_type == "cpu":
        return ("float64", "float32", "bfloat16", "float16", "int32", "int64")
    if torch.version.hip:  # ROCm: FP8 is e4m3fnuz there, and TF32 is not NVIDIA's; offer neither
        return ("float64", "float32", "bfloat16", "float16", "int32", "int64")
    major, minor = torch.cuda.get_device_capability()
    names = ["float64", "float32", "float16", "int32", "int64"]
    if major >= 8:
        names += ["tf32", "bfloat16"]
    if (major, minor) >= (8, 9):
        names.append("float8")
    return tuple(n for n in DTYPES if n in names)


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def free_memory_bytes(device_type: str, *, in_rank: bool = False) -> int:
    """Memory free on one device: in a rank (its GPU selected), the GPU's free memory; before
    the ranks start, the GPU's total (reading free memory would open a CUDA context on GPU 0 in
    the supervisor, which would hold it for the whole run). On CPU the host's available memory."""
    if device_type == "cuda":
        return torch.cuda.mem_get_info()[0] if in_rank else torch.cuda.get_device_properties(0).total_memory
    import psutil

    return psutil.virtual_memory().available


def device_name(device_type: str) -> str:
    """The name hardware profiles are matched against."""
    return torch.cuda.get_device_name() if device_type == "cuda" else _cpu_model()


def cuda_capability_note(dtype: str) -> str:
    """Why a dtype is missing on this GPU."""
    need = {"float8": "8.9 (Ada/Hopper)", "tf32": "8.0 (Ampere)", "bfloat16": "8.0 (Ampere)"}.get(dtype, "?")
    major, minor = torch.cuda.get_device_capability()
    return f"needs compute capability {need}; this GPU has {major}.{minor}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpu_uuid(device: torch.device) -> str:
    """The GPU's UUID as NVML and nvidia-smi write it ('GPU-...'), from torch."""
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"


def nvml_handle(nvml: Any, uuid: str | None, index: int) -> Any:
    """NVML's handle for this GPU. By UUID: NVML numbers GPUs in PCI order and ignores
    CUDA_VISIBLE_DEVICES, so under Slurm's GPU binding CUDA's index 0 is not NVML's."""
    if uuid:
        with contextlib.suppress(Exception):
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
    return nvml.nvmlDeviceGetHandleByIndex(index)


def _nvml_fields(uuid: str | None, index: int) -> dict[str, Any]:
    """UUID and driver from NVML where it is there; nothing (not an error) where it is not."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        handle = nvml_handle(pynvml, uuid, index)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
        }
    except Exception:
        return {}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def describe(device: torch.device) -> dict[str, Any]:
    """What the manifest records about one rank's device."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info: dict[str, Any] = {
            "type": "cuda",
            "index": device.index,
            "name": props.name,
            "memory_bytes": props.total_memory,
            "compute_capability": f"{props.major}.{props.minor}",
        }
        with contextlib.suppress(Exception):
            info["uuid"] = gpu_uuid(device)
        info.update({k: v for k, v in _nvml_fields(info.get("uuid"), device.index or 0).items() if k not in info})
        return info
    import psutil

    return {
        "type": "cpu",
        "name": _cpu_model(),
        "cores": os.cpu_count(),
        "threads_used": torch.get_num_threads(),
        "memory_bytes": psutil.virtual_memory().total,
    }
