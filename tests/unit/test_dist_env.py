"""Launcher environments: what each launcher exports, and what the harness makes of it."""

import pytest

from harness import dist


def test_not_under_a_launcher() -> None:
    assert dist.detect({"PATH": "/bin", "HOME": "/root"}) is None


def test_torchrun() -> None:
    env = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "node7",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RUN_ID": "abc",
        "GROUP_RANK": "1",
    }
    launch = dist.detect(env)
    assert launch == dist.LaunchEnv("torchrun", 3, 8, 1, 2, "node7", 29500, node_rank=1)


def test_harness_local_launch_is_torchrun_underneath() -> None:
    env = {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1234",
        "HARNESS_LAUNCHER": "local",
    }
    assert dist.detect(env).launcher == "local"


def test_slurm_step() -> None:
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "2",
        "SLURM_STEP_TASKS_PER_NODE": "2(x3),2",
        "SLURM_STEP_NODELIST": "gpu[07-09],gpu12",
        "SLURM_JOB_NODELIST": "gpu[01-20]",
    }
    launch = dist.detect(env)
    assert launch.launcher == "slurm"
    assert (launch.rank, launch.world_size, launch.local_rank, launch.local_world_size) == (5, 8, 1, 2)
    assert launch.node_rank == 2
    assert launch.master_addr == "gpu07"  # first host of the step's node list
    assert launch.master_port == dist.slurm_port("4242", "0")
    assert 20000 <= launch.master_port < 40000


def test_slurm_user_master_addr_wins() -> None:
    env = {
        "SLURM_JOB_ID": "1",
        "SLURM_STEP_ID": "3",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NODELIST": "n[1-2]",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "5555",
    }
    launch = dist.detect(env)
    assert (launch.master_addr, launch.master_port) == ("10.0.0.1", 5555)


def test_slurm_batch_shell_is_not_a_rank() -> None:
    # sbatch's shell has SLURM_PROCID=0 and SLURM_NTASKS but no step id: it must not wait for peers.
    assert (
        dist.detect({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n1"}) is None
    )


def test_open_mpi() -> None:
    env = {
        "OMPI_COMM_WORLD_RANK": "3",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
        "OMPI_COMM_WORLD_NODE_RANK": "1",
    }
    assert dist.detect(env) == dist.LaunchEnv("mpi", 3, 4, 1, 2, node_rank=1)


def test_mpich_hydra() -> None:
    env = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
    assert dist.detect(env) == dist.LaunchEnv("mpi", 1, 2, 1, 2)


def test_pmix_without_size_asks_mpi() -> None:
    assert dist.detect({"PMIX_RANK": "2"}).world_size == -1


def test_srun_with_pmi2_is_a_slurm_step() -> None:
    env = {
        "SLURM_JOB_ID": "9",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "1",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NODELIST": "n1",
        "PMI_RANK": "1",
        "PMI_SIZE": "2",
    }
    assert dist.detect(env).launcher == "slurm"


def test_mpiexec_inside_an_allocation_is_mpi() -> None:
    # Hydra's proxies run as one Slurm task per node: SLURM_PROCID is the node, not the rank.
    env = {
        "SLURM_JOB_ID": "9",
        "SLURM_STEP_ID": "1",
        "SLURM_PROCID": "0",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NODELIST": "n[1-2]",
        "PMI_RANK": "3",
        "PMI_SIZE": "8",
    }
    launch = dist.detect(env)
    assert (launch.launcher, launch.rank, launch.world_size) == ("mpi", 3, 8)


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("n1", ["n1"]),
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("gpu[01-03,07],login1", ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("a[8-10]", ["a8", "a9", "a10"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert dist.expand_hostlist(hostlist) == hosts


def test_compress_hostlist_round_trip() -> None:
    hosts = ["n1", "n2", "n4", "gpu01", "gpu02", "login"]
    compressed = dist.compress_hostlist(hosts)
    assert sorted(dist.expand_hostlist(compressed)) == sorted(hosts)
    assert dist.compress_hostlist(["n1"]) == "n1"
    assert dist.compress_hostlist(["n3", "n1", "n2"]) == "n[1-3]"


def test_tasks_per_node() -> None:
    assert dist._tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert dist._tasks_per_node("4") == [4]


MPICH_UCX_OFI = "MPICH Version:      5.0.2\nMPICH Device:       ch4:ucx ofi\n"


def test_mpich_under_slurm_pmi2_takes_ofi() -> None:
    """Slurm's pmi2 plugin cuts PMI-1 requests at 1,024 bytes; UCX's business card can exceed it."""
    env = {"SLURM_MPI_TYPE": "pmi2", "PMI_FD": "11"}
    assert dist.mpi_start_env(MPICH_UCX_OFI, env) == {"MPIR_CVAR_CH4_NETMOD": "ofi"}


@pytest.mark.parametrize(
    ("version", "env"),
    [
        (MPICH_UCX_OFI, {"SLURM_MPI_TYPE": "pmix"}),  # PMIx carries long values whole
        (MPICH_UCX_OFI, {"PMI_FD": "5"}),  # mpiexec (Hydra) reads whole lines
        (MPICH_UCX_OFI, {"SLURM_MPI_TYPE": "pmi2", "MPIR_CVAR_CH4_NETMOD": "ucx"}),  # the user chose
        (MPICH_UCX_OFI, {"SLURM_MPI_TYPE": "pmi2", "MPICH_CH4_NETMOD": "ucx"}),
        ("MPICH Version: 4.2\nMPICH Device: ch4:ucx\n", {"SLURM_MPI_TYPE": "pmi2"}),  # no OFI to take
        ("MPICH Version: 4.2\nMPICH Device: ch4:ofi\n", {"SLURM_MPI_TYPE": "pmi2"}),  # OFI already
        ("Open MPI v5.0.3, package: Open MPI", {"SLURM_MPI_TYPE": "pmi2"}),
    ],
)
def test_mpi_start_env_leaves_everything_else_alone(version: str, env: dict[str, str]) -> None:
    assert dist.mpi_start_env(version, env) == {}
