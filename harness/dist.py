"""Launcher environments, rendezvous, process-group setup and a clean exit.

This is the only module that reads launcher variables. It recognises:
- torchrun / torch elastic (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT, TORCHELASTIC_RUN_ID),
  which is also how the harness's own local launch reaches its ranks;
- MPI: Open MPI (OMPI_COMM_WORLD_*), MPICH/Hydra (PMI_RANK/PMI_SIZE, MPI_LOCALRANKID) and PMIx
  (PMIX_RANK); rank 0 broadcasts the rendezvous address over mpi4py;
- Slurm job steps started by srun (SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, node lists);
  MASTER_ADDR is the first host of the step's node list, MASTER_PORT derives from the job/step id.
A user-set MASTER_ADDR/MASTER_PORT always wins, as with torchrun.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

LAUNCHERS = ("torchrun", "slurm", "mpi", "local")


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the job, as its launcher describes it."""

    launcher: str
    """torchrun | slurm | mpi | local."""
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None = None
    master_port: int | None = None
    node_rank: int = 0


# ---------------------------------------------------------------- host lists (Slurm syntax)


def expand_hostlist(hostlist: str) -> list[str]:
    """'gpu[01-03,07],login1' -> ['gpu01', 'gpu02', 'gpu03', 'gpu07', 'login1'] (zero padding kept)."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", hostlist):
        hosts.extend(_expand_one(part))
    return hosts


def _expand_one(pattern: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", pattern)
    if not match:
        return [pattern] if pattern else []
    head, tail = pattern[: match.start()], pattern[match.end() :]
    out: list[str] = []
    for item in match.group(1).split(","):
        if "-" in item:
            lo, hi = item.split("-", 1)
            width = len(lo)
            out.extend(f"{head}{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
        else:
            out.append(f"{head}{item}")
    return [host for prefix in out for host in _expand_one(prefix + tail)]


def compress_hostlist(hosts: list[str]) -> str:
    """The inverse of expand_hostlist for simple numbered names: ['n1', 'n2', 'n4'] -> 'n[1-2,4]'."""
    groups: dict[tuple[str, int], list[int]] = {}
    plain: list[str] = []
    for host in sorted(set(hosts)):
        match = re.fullmatch(r"(.*?)(\d+)", host)
        if match:
            digits = match.group(2)
            width = len(digits) if digits.startswith("0") else 0
            groups.setdefault((match.group(1), width), []).append(int(digits))
        else:
            plain.append(host)
    parts = list(plain)
    for (prefix, width), numbers in sorted(groups.items()):
        numbers.sort()
        ranges: list[str] = []
        start = prev = numbers[0]
        for number in [*numbers[1:], None]:
            if number is not None and number == prev + 1:
                prev = number
                continue
            ranges.append(f"{start:0{width}d}" if start == prev else f"{start:0{width}d}-{prev:0{width}d}")
            if number is not None:
                start = prev = number
        parts.append(
            f"{prefix}{ranges[0]}" if len(ranges) == 1 and "-" not in ranges[0] else f"{prefix}[{','.join(ranges)}]"
        )
    return ",".join(parts)


def _tasks_per_node(spec: str) -> list[int]:
    """Slurm's '2(x3),1' -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for item in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if match:
            counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def slurm_partition(env: Mapping[str, str] | None = None) -> str | None:
    """The Slurm partition of this job, or None outside Slurm."""
    env = os.environ if env is None else env
    return env.get("SLURM_JOB_PARTITION") or None


def slurm_port(job_id: str, step_id: str) -> int:
    """A port in 20000-39999 that every task of one step derives alike and other steps rarely share."""
    try:
        key = int(job_id) * 31 + int(step_id)
    except ValueError:
        key = sum(map(ord, f"{job_id}.{step_id}"))
    return 20000 + key % 20000


# ---------------------------------------------------------------- detection (pure)


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        if env.get(name, "").strip().lstrip("-").isdigit():
            return int(env[name])
    return None


def _mpi_env(env: Mapping[str, str]) -> LaunchEnv | None:
    rank = _int(env, "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
    size = _int(env, "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
    if rank is None:
        return None
    local_rank = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID") or 0
    local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS") or 1
    node_rank = _int(env, "OMPI_COMM_WORLD_NODE_RANK") or 0
    # PMIx does not export the size; mpi4py supplies it at init. -1 marks "ask MPI".
    return LaunchEnv("mpi", rank, size if size is not None else -1, local_rank, local_size, node_rank=node_rank)


def _slurm_env(env: Mapping[str, str]) -> LaunchEnv | None:
    # Only a job step started by srun has a step id; the batch shell itself is not a rank.
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID"))
    rank = _int(env, "SLURM_PROCID")
    size = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    if step is None or rank is None or size is None or step.strip() in ("batch", "extern", "4294967294"):
        return None
    node_rank = _int(env, "SLURM_NODEID") or 0
    per_node = _tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", "")))
    local_size = per_node[node_rank] if node_rank < len(per_node) else 1
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    hosts = expand_hostlist(nodelist)
    addr = env.get("MASTER_ADDR") or (hosts[0] if hosts else None)
    port = _int(env, "MASTER_PORT") or slurm_port(env.get("SLURM_JOB_ID", "0"), step)
    return LaunchEnv("slurm", rank, size, _int(env, "SLURM_LOCALID") or 0, local_size, addr, port, node_rank)


def detect(env: Mapping[str, str] | None = None) -> LaunchEnv | None:
    """Which launcher started this process, and this process's place in it; None when none did."""
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env or all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        launcher = "local" if env.get("HARNESS_LAUNCHER") == "local" else "torchrun"
        return LaunchEnv(
            launcher,
            rank=_int(env, "RANK") or 0,
            world_size=_int(env, "WORLD_SIZE") or 1,
            local_rank=_int(env, "LOCAL_RANK") or 0,
            local_world_size=_int(env, "LOCAL_WORLD_SIZE") or 1,
            master_addr=env.get("MASTER_ADDR"),
            master_port=_int(env, "MASTER_PORT"),
            node_rank=_int(env, "GROUP_RANK") or 0,
        )
    mpi = _mpi_env(env)
    slurm = _slurm_env(env)
    # srun --mpi=pmi2/pmix exports PMI variables too; when they agree with Slurm's, it is a Slurm
    # step. mpiexec inside an allocation gives ranks that differ from SLURM_PROCID: MPI wins.
    if mpi and not (slurm and slurm.rank == mpi.rank and mpi.world_size in (-1, slurm.world_size)):
        return mpi
    return slurm


# ---------------------------------------------------------------- rendezvous and init


def host_name(env: Mapping[str, str] | None = None) -> str:
    """The name of this node as the job sees it: Slurm's node name under Slurm (the name an admin
    drains or excludes, which need not be the host name), else the host name."""
    env = os.environ if env is None else env
    return env.get("SLURMD_NODENAME") or socket.gethostname()


def free_port() -> int:
    """A TCP port that is free on this host now (for single-host rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_host(host: str) -> str:
    """An address for `host`; falls back to Slurm's NodeAddr when the name is not in DNS
    (Slurm node names need not be host names, as on the local test cluster)."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        pass
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["scontrol", "show", "node", host], capture_output=True, text=True, timeout=10).stdout
        match = re.search(r"NodeAddr=(\S+)", out)
        if match:
            return socket.gethostbyname(match.group(1))
    return host


# Slurm's mpi/pmi2 plugin takes each PMI-1 request with a single read of at most 1,024 bytes.
# MPICH's UCX transport publishes a 4 KB business card (its address plus whatever heap follows)
# in segments of up to ~1,000 encoded characters, so when a segment compresses badly its request
# arrives in two pieces: slurmstepd logs "mpi/pmi2: invalid client request" and MPI_Init hangs.
# MPICH's OFI transport publishes a card of a few dozen bytes. The bootstrap moves a few bytes,
# so which transport carries them does not matter.
_NETMOD_VARS = ("MPIR_CVAR_CH4_NETMOD", "MPICH_CH4_NETMOD", "MPIR_PARAM_CH4_NETMOD")


def mpi_start_env(library_version: str, env: Mapping[str, str]) -> dict[str, str]:
    """Variables to set before MPI starts: MPICH's OFI transport under Slurm's pmi2 plugin when
    this MPICH has it and the user chose none; {} everywhere else."""
    if env.get("SLURM_MPI_TYPE") != "pmi2" or not library_version.startswith("MPICH"):
        return {}
    if any(name in env for name in _NETMOD_VARS):
        return {}
    device = re.search(r"^MPICH Device:\s*(.*)$", library_version, re.MULTILINE)
    netmods = {name.rsplit(":", 1)[-1] for name in device.group(1).split()} if device else set()
    if "ofi" not in netmods or netmods == {"ofi"}:  # OFI alone is already the choice
        return {}
    return {"MPIR_CVAR_CH4_NETMOD": "ofi"}


def _start_mpi() -> Any:
    """mpi4py's MPI module, started here rather than at import, so that the transport can be
    chosen first (see mpi_start_env)."""
    import mpi4py  # only where MPI starts the ranks: mpi4py is optional elsewhere

    mpi4py.rc.initialize = False
    from mpi4py import MPI

    if not MPI.Is_initialized():
        os.environ.update(mpi_start_env(MPI.Get_library_version(), os.environ))
        MPI.Init()
    return MPI


def _mpi_bootstrap(launch: LaunchEnv) -> LaunchEnv:
    MPI = _start_mpi()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    hosts = comm.allgather(socket.gethostname())
    if rank == 0:
        single_host = len(set(hosts)) == 1
        addr = "127.0.0.1" if single_host else resolve_host(socket.gethostname())
        # The launcher's port where it gives one (under Slurm: derived from the job id): a port
        # picked free here could be taken by another process before the store binds it.
        port = int(os.environ.get("MASTER_PORT", 0)) or launch.master_port or free_port()
        payload = (os.environ.get("MASTER_ADDR", addr), port)
    else:
        payload = None
    addr, port = comm.bcast(payload, root=0)
    # MPI's part ends here. Finalizing now, on every rank together, frees MPICH's /dev/shm
    # segments, which the os._exit at the end of a run would otherwise leave behind.
    MPI.Finalize()
    local = [h for h in hosts[:rank] if h == hosts[rank]]
    node_rank = list(dict.fromkeys(hosts)).index(hosts[rank])
    return replace(
        launch,
        rank=rank,
        world_size=size,
        local_rank=len(local),
        local_world_size=hosts.count(hosts[rank]),
        master_addr=addr,
        master_port=port,
        node_rank=node_rank,
    )


@dataclass
class DistContext:
    """An initialised process group and what the rest of the harness needs to know about it."""

    launch: LaunchEnv
    device: Any  # torch.device
    backend: str
    rendezvous: str = "env"
    """How the ranks found rank 0: env (the launcher's variables) or mpi4py."""
    hosts: dict[int, str] = field(default_factory=dict)
    """Every rank's host (rank 0 learns them at the start; failures are named by host)."""

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_root(self) -> bool:
        return self.launch.rank == 0


FLIGHT_RECORDER_ENTRIES = "2000"
"""Collectives each rank's flight recorder keeps (TORCH_FR_BUFFER_SIZE): enough to see the last
few hundred before a hang, a few hundred KB of memory."""


def _failure_settings(device_type: str, flight_dir: str | None) -> None:
    """Before the process group starts: the flight recorder on (gloo has one since torch 2.8,
    NCCL's dumps itself on a timeout into flight_dir), and NCCL's watchdog tearing the
    communicator down on an error instead of leaving the job hung. A user's own setting wins."""
    os.environ.setdefault("TORCH_FR_BUFFER_SIZE", FLIGHT_RECORDER_ENTRIES)
    if device_type == "cuda":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
        os.environ.setdefault("TORCH_NCCL_DUMP_ON_TIMEOUT", "1")
        os.environ.setdefault("TORCH_NCCL_ENABLE_MONITORING", "1")
        if flight_dir:  # NCCL's watchdog dump, which torch's fr_trace reads (-p rank- <dir>/nccl)
            os.environ.setdefault("TORCH_FR_DUMP_TEMP_FILE", os.path.join(flight_dir, "nccl", "rank-"))


def init(launch: LaunchEnv, device_type: str, timeout_s: int, bootstrap: str = "auto",
         flight_dir: str | None = None) -> DistContext:  # fmt: skip
    """Join the process group: NCCL on CUDA, gloo on CPU. Rendezvous through env:// so that
    torchrun's agent store is reused and every other launcher looks the same to torch.
    bootstrap='mpi' takes rank 0's address from mpi4py under any launcher that starts MPI ranks
    (srun --mpi=pmi2/pmix); the launcher recorded stays the one that started the ranks."""
    import torch
    import torch.distributed as dist

    rendezvous = "env"
    if launch.launcher == "mpi" or (bootstrap == "mpi" and launch.launcher == "slurm"):
        launch = _mpi_bootstrap(launch)
        rendezvous = "mpi4py"
    elif launch.launcher == "slurm" and launch.master_addr:
        launch = replace(launch, master_addr=resolve_host(launch.master_addr))
    os.environ.update(
        MASTER_ADDR=str(launch.master_addr or "127.0.0.1"),
        MASTER_PORT=str(launch.master_port or free_port()),
        RANK=str(launch.rank),
        WORLD_SIZE=str(launch.world_size),
        LOCAL_RANK=str(launch.local_rank),
    )
    if device_type == "cuda":
        index = launch.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        # Ranks share this host's cores: give each its share unless the user chose.
        if "OMP_NUM_THREADS" not in os.environ or launch.launcher in ("local", "torchrun"):
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, launch.local_world_size)))
    kwargs: dict[str, Any] = {}
    if device_type == "cuda":
        kwargs["device_id"] = device
    _failure_settings(device_type, flight_dir)
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=launch.rank,
        world_size=launch.world_size,
        timeout=timedelta(seconds=timeout_s),
        **kwargs,
    )
    return DistContext(launch, device, backend, rendezvous)


@dataclass
class Comm:
    """A communicator a benchmark runs on: the world, or one of `bench.groups` equal groups."""

    group: Any
    """torch ProcessGroup, or None for the world."""
    ranks: list[int]
    """Global ranks in the group, in order."""
    index: int
    """Which group (0 for the world)."""
    global_rank: int

    @property
    def rank(self) -> int:
        return self.ranks.index(self.global_rank)

    @property
    def size(self) -> int:
        return len(self.ranks)


def split(ctx: DistContext, groups: int) -> Comm:
    """Split the world into `groups` equal groups of consecutive ranks (like NCCL_TESTS_SPLIT
    with a modulo of ranks per node: one group per node when ranks are node-major).
    Every rank must call it, in the same order."""
    import torch.distributed as dist

    size = ctx.world_size // groups
    if groups == 1:
        return Comm(None, list(range(ctx.world_size)), 0, ctx.rank)
    cache = ctx.__dict__.setdefault("_groups", {})
    if groups not in cache:
        layout = [list(range(g * size, (g + 1) * size)) for g in range(groups)]
        mine, _ = dist.new_subgroups_by_enumeration(layout)
        cache[groups] = Comm(mine, layout[ctx.rank // size], ctx.rank // size, ctx.rank)
    return cache[groups]


# ---------------------------------------------------------------- collectives for the harness itself


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a decision only rank 0 can take)."""
    import torch.distributed as dist

    box = [obj if ctx.is_root else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: DistContext, obj: Any) -> list[Any] | None:
    """Every rank's `obj` on rank 0 (None elsewhere)."""
    import torch.distributed as dist

    out: list[Any] | None = [None] * ctx.world_size if ctx.is_root else None
    dist.gather_object(obj, out, dst=0)
    return out


# ---------------------------------------------------------------- exit


def shutdown(ctx: DistContext | None, healthy: bool) -> None:
    """Leave the process group: barrier (when healthy), then destroy it.

    The barrier keeps a fast rank from tearing down under a slow one. When the run is not
    healthy it is skipped: a dead peer would make it hang.
    """
    import torch.distributed as dist

    if ctx is not None and dist.is_initialized():
        with contextlib.suppress(Exception):
            if healthy:
                dist.barrier()
            dist.destroy_process_group()


def hard_exit(code: int) -> None:
    """Flush and os._exit: skips interpreter teardown, where torch's gloo backend aborts in a few
    percent of runs (pytorch issue 190489). Call after shutdown()."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
