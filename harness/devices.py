"""Devices: which one to use, how many ranks a host may start, which data types a device has,
and what it is (for the manifest).

Capabilities follow the hardware: TF32 and BF16 need NVIDIA compute capability 8.0 (Ampere),
FP8 matmul needs 8.9 (Ada/Hopper). On CPU, float16 is offered (torch computes it, slowly) but is not
in the default lists; TF32 and FP8 matmul units do not exist there, so both are refused.

torch is imported inside the functions that ask the device: the command line loads jobs through
this module, and `harness --help` must not pay for torch.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable
from typing import Any

from harness.dtypes import SIZES
from harness.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
MAX_CPU_RANKS_PER_CORE = 8
MIN_CPU_RANK_LIMIT = 64


def resolve_device_type(requested: str) -> str:
    """'auto' -> 'cuda' or 'cpu'; refuses 'cuda' without a GPU and unknown names."""
    if requested not in DEVICE_CHOICES:
        raise ConfigError(f"device={requested!r} is not a device; choices: {', '.join(DEVICE_CHOICES)}")
    import torch  # heavy: only once a job is being loaded

    has_cuda = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if requested == "cuda" and not has_cuda:
        raise ConfigError("device=cuda but no CUDA GPU is visible here; choices on this machine: auto, cpu")
    return requested


def device_dtypes(device_type: str) -> tuple[str, ...]:
    """Data types the device can compute with (before any benchmark's own limits)."""
    import torch

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
    return tuple(n for n in SIZES if n in names)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_nproc(value: Any, device_type: str) -> int:
    """launch.nproc: 'auto' is one rank per GPU, or 2 on a CPU-only machine; else a whole number."""
    text = str(value).strip()
    if text == "auto":
        return gpu_count() if device_type == "cuda" else 2
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"launch.nproc={text} must be 'auto' or a whole number >= 1")
    return int(text)


def cpu_rank_limit(cores: int | None = None) -> int:
    """The most ranks one CPU host may start: max(8 x cores, 64)."""
    cores = cores or os.cpu_count() or 1
    return max(MAX_CPU_RANKS_PER_CORE * cores, MIN_CPU_RANK_LIMIT)


def check_local_ranks(nproc: int, device_type: str, *, warn: Callable[[str], None]) -> None:
    """Ranks this host is about to start: at most its GPUs, or on a CPU at most max(8 x cores,
    64), with a warning past one rank per core."""
    if device_type == "cuda":
        gpus = gpu_count()
        if nproc > gpus:
            raise ConfigError(f"launch.nproc={nproc} but this machine has {gpus} GPU(s); choose 1..{gpus}")
        return
    cores = os.cpu_count() or 1
    if nproc > cpu_rank_limit(cores):
        raise ConfigError(f"launch.nproc={nproc} is more than this host can run: {cores} CPU cores allow at most "
                          f"max(8 x {cores}, 64) = {cpu_rank_limit(cores)} ranks")  # fmt: skip
    if nproc > cores:
        warn(f"launch.nproc={nproc} ranks share {cores} CPU cores: they will time-slice, and figures drop")


def free_memory_bytes(device_type: str, *, in_rank: bool = False) -> int:
    """Memory free on one device: in a rank (its GPU selected), the GPU's free memory; before
    the ranks start, the GPU's total (reading free memory would open a CUDA context on GPU 0 in
    the supervisor, which would hold it for the whole run). On CPU the host's available memory."""
    if device_type == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0] if in_rank else torch.cuda.get_device_properties(0).total_memory
    import psutil

    return psutil.virtual_memory().available


def device_name(device_type: str) -> str:
    """The name hardware profiles are matched against."""
    if device_type != "cuda":
        return _cpu_model()
    import torch

    return torch.cuda.get_device_name()


def cuda_capability_note(dtype: str) -> str:
    """Why a dtype is missing on this GPU."""
    import torch

    need = {"float8": "8.9 (Ada/Hopper)", "tf32": "8.0 (Ampere)", "bfloat16": "8.0 (Ampere)"}.get(dtype, "?")
    major, minor = torch.cuda.get_device_capability()
    return f"needs compute capability {need}; this GPU has {major}.{minor}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpu_uuid(device: Any) -> str:
    """The GPU's UUID as NVML and nvidia-smi write it ('GPU-...'), from torch."""
    import torch

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


def describe(device: Any) -> dict[str, Any]:
    """What the manifest records about one rank's device (a torch.device)."""
    import torch

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
