"""Secrets planted in the environment, and pulled into the config with ${oc.env:...}, reach no
file of a run directory (manifest, rows, job file, console.log, plots, reports) in a bench, a
train and an accept run; what is not a secret is kept."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from tests.conftest import harness_env, run_cmd

pytestmark = pytest.mark.integration

RNG = random.Random()
ALNUM = string.ascii_letters + string.digits


def rand(alphabet: str, n: int) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


PLANTED = {
    "NCCL_PLANTED_OPTION": "ghp_" + rand(ALNUM, 36),  # a kept prefix, a credential value
    "HARNESS_DB_PWD": "pw-" + rand(string.ascii_lowercase, 12),  # a credential name
    "WANDB_KEY": rand("0123456789abcdef", 40),  # neither name nor prefix: 40 hex, as wandb's keys are
    "AWS_SECRET_ACCESS_KEY": rand(ALNUM + "/+", 40),  # pulled into the config below
    "DEPLOY_REF": "hf_" + rand(ALNUM, 34),  # an ordinary name holding a credential, also pulled in
    "HARNESS_STORE_URL": "https://admin:" + rand(string.ascii_lowercase, 14) + "@store.internal/runs",
    "SLURM_PLANTED_JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0." + rand(ALNUM, 43),
    "TORCH_PLANTED_KEYS": f"AKIA{rand(string.ascii_uppercase + string.digits, 16)},xoxb-{rand(ALNUM, 24)}",
}
KEPT = {"NCCL_DEBUG": "WARN", "HARNESS_CACHE": "/cache/" + rand("0123456789abcdef", 64) + "/kernels"}
PULLED_IN = ["hardware.description=${oc.env:AWS_SECRET_ACCESS_KEY}"]


def secret_parts() -> list[str]:
    """What must appear nowhere: each planted value, and the secret part of the URL and lists."""
    parts = [v for k, v in PLANTED.items() if k not in ("HARNESS_STORE_URL", "TORCH_PLANTED_KEYS")]
    parts.append(PLANTED["HARNESS_STORE_URL"].split(":")[2].split("@")[0])
    parts.extend(PLANTED["TORCH_PLANTED_KEYS"].split(","))
    return parts


def check(run_dir: Path) -> None:
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"manifest.json", "rows.jsonl", "config.json", "console.log"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        for part in secret_parts():
            assert part.encode() not in data, f"{part[:8]}... found in {path.relative_to(run_dir)}"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    env = manifest["env"]
    assert {k: env.get(k) for k in KEPT} == KEPT, "a value that is not a secret was redacted"
    assert env["HARNESS_STORE_URL"] == "https://admin:<redacted>@store.internal/runs"
    assert len(manifest["git_sha"] or "0" * 40) == 40 and manifest["run_id"] == run_dir.name
    # The ranks read the secret from their own environment: the job file keeps the interpolation.
    job = json.loads((run_dir / "config.json").read_text())
    assert job["config"]["hardware"]["description"] == "${oc.env:AWS_SECRET_ACCESS_KEY}"


@pytest.mark.parametrize(
    "command",
    [
        ["bench", "all_reduce", "bench=quick", "launch.nproc=2"],
        [
            "train",
            "train.steps=2",
            "train.global_batch=4",
            "train.micro_batch=2",
            "train.seq_len=16",
            "launch.nproc=2",
            "logger.wandb.entity=${oc.env:DEPLOY_REF}",
        ],
        [
            "accept",
            "launch.nproc=2",
            "hardware=cpu",
            "accept.retries=0",
            "accept.comm_bytes=64K",
            "accept.gemm_shapes=[128x128x128]",
        ],
    ],
    ids=["bench", "train", "accept"],
)
def test_planted_secrets_reach_no_file_of_the_run(tmp_path: Path, command: list[str]) -> None:
    results = tmp_path / "results"
    run = run_cmd(["harness", *command, *PULLED_IN, f"results.dir={results}"], timeout=300,
                  env=harness_env(**PLANTED, **KEPT))  # fmt: skip
    assert run.proc.returncode in (0, 1), run.output  # accept may flag this busy machine; it must not crash
    (run_dir,) = [p for p in results.iterdir() if p.is_dir() and p.name != "sweeps"]
    check(run_dir)
    if command[0] == "train":
        job = json.loads((run_dir / "config.json").read_text())
        assert job["config"]["logger"]["wandb"]["entity"] == "${oc.env:DEPLOY_REF}"
