"""Credentials are redacted by value too (harness.results.provenance.scrub), and nothing that is
not one: ids, checksums, paths and model names stay as they are."""

from __future__ import annotations

import random
import string
import uuid

import pytest
from omegaconf import OmegaConf

from harness.config.job import secret_keys
from harness.results.provenance import REDACTED, environment, looks_like_secret, redact, scrub

RNG = random.Random(7)


def rand(alphabet: str, n: int) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
SECRETS = {
    "github classic": "ghp_" + rand(ALNUM, 36),
    "github fine-grained": "github_pat_11" + rand(ALNUM, 20) + "_" + rand(ALNUM, 59),
    "hugging face": "hf_" + rand(ALNUM, 34),
    "openai": "sk-proj-" + rand(ALNUM + "-_", 48),
    "aws key id": "AKIA" + rand(string.ascii_uppercase + string.digits, 16),
    "slack": "xoxb-" + rand(string.digits, 12) + "-" + rand(ALNUM, 24),
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0." + rand(ALNUM + "-_", 43),
    "pem": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    "aws secret (random base64)": rand(ALNUM + "/+", 40),
    "wandb (40 hex)": rand("0123456789abcdef", 40),
}
NOT_SECRETS = [
    str(uuid.UUID(int=RNG.getrandbits(128))),
    "GPU-" + str(uuid.UUID(int=RNG.getrandbits(128))),
    "20261203T114914Z-bench-472708",
    "/cache/kernels/" + rand("0123456789abcdef", 64) + "/kernel.cubin",  # a content hash in a path
    "meta-llama/Meta-Llama-3.1-405B-Instruct-FP8",
    "llama3_8b_fsdp2_tp2_pp2_cp1_seq8192_mbs1",
    "ThisIsAVeryLongCamelCaseIdentifier2",
    "mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1",
    "/usr/local/cuda-12.4/lib64:/opt/hpcx-v2.18/ucx/lib",
    "hpl_N8192_NB256_P2_Q1_float64_run3_trial2_abc",
    "TOKENIZERS_PARALLELISM",
    "a" * 40,
]


@pytest.mark.parametrize("kind", list(SECRETS))
def test_a_credential_is_redacted_whole_and_inside_text(kind: str) -> None:
    secret = SECRETS[kind]
    assert scrub(secret) == REDACTED
    text = f"error: could not reach the store with {secret} (retrying)"
    if kind.startswith("wandb"):  # bare hex inside text is a commit or a checksum as often as not: kept
        assert scrub(text) == text
    else:
        assert secret not in scrub(text) and scrub(text).startswith("error: could not reach the store with ")


@pytest.mark.parametrize("value", NOT_SECRETS)
def test_ids_paths_and_names_are_kept(value: str) -> None:
    assert scrub(value) == value and not looks_like_secret(value)


def test_a_password_in_a_url_goes_and_the_url_stays() -> None:
    assert scrub("postgres://admin:hunter2@db:5432/runs") == f"postgres://admin:{REDACTED}@db:5432/runs"


def test_random_keys_are_caught_as_a_rule() -> None:
    # A net, not a guarantee (the docstring says about 1 in 50 pass): here 1000 of each shape.
    shapes = [lambda: rand(ALNUM, 32), lambda: rand(ALNUM + "/+", 40), lambda: rand(ALNUM + "-_", 40)]
    caught = [sum(looks_like_secret(make()) for _ in range(1000)) for make in shapes]
    assert all(c >= 950 for c in caught), caught


def test_environment_keeps_what_explains_a_run_and_redacts_credentials_by_value() -> None:
    env = {"NCCL_DEBUG": "INFO", "NCCL_IB_HCA": "mlx5_0,mlx5_1", "NCCL_PLANTED": SECRETS["github classic"],
           "WANDB_KEY": SECRETS["wandb (40 hex)"], "HARNESS_DB_PWD": "hunter2",
           "TORCHELASTIC_RUN_ID": NOT_SECRETS[0], "HOME": "/root"}  # fmt: skip
    got = environment(env)
    kept = {"NCCL_DEBUG": "INFO", "NCCL_IB_HCA": "mlx5_0,mlx5_1", "TORCHELASTIC_RUN_ID": NOT_SECRETS[0]}
    assert got == kept | {"NCCL_PLANTED": REDACTED, "WANDB_KEY": REDACTED, "HARNESS_DB_PWD": REDACTED}


def test_redact_keeps_the_harness_own_fields() -> None:
    run_id = SECRETS["wandb (40 hex)"]  # even an id that looks like a key, when the harness wrote it
    config = {"results": {"run_id": run_id, "dir": "results"}, "hardware": {"description": SECRETS["hugging face"]}}
    got = redact(config, frozenset({"results.run_id"}))
    assert got == {"results": {"run_id": run_id, "dir": "results"}, "hardware": {"description": REDACTED}}


def test_an_interpolation_of_a_variable_holding_a_credential_stays_unresolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_REF", SECRETS["hugging face"])
    monkeypatch.setenv("DEPLOY_NAME", "llama3-8b")
    raw = OmegaConf.to_container(OmegaConf.create({"a": {"b": "${oc.env:DEPLOY_REF}", "c": "${oc.env:DEPLOY_NAME}",
                                                         "d": "${oc.env:AWS_SECRET_ACCESS_KEY,none}"}}))  # fmt: skip
    assert secret_keys(raw) == ("a.b", "a.d")
