"""Run records: layout, atomic writes, schema validation, secrets, closing an orphaned run."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import jsonschema
import pytest

from harness.results import RunRecord, close_if_unfinished, validate_manifest, validate_row
from harness.results import run as run_module
from harness.results.atomic import write_atomic
from harness.results.provenance import REDACTED, environment, is_secret_name, redact
from harness.results.read import iter_runs
from harness.results.run import RecordError

GEMM_ROW = {"kind": "gemm", "dtype": "float32", "m": 8, "n": 8, "k": 8, "time_us": 1.0, "time_us_min": 0.9,
            "time_us_max": 1.2, "tflops": 0.001, "rel_error": 1e-7, "tolerance": 1e-4, "passed": True, "rank": 0,
            "host": "h", "world_size": 1}  # fmt: skip


def make(tmp_path: Path, **config: object) -> RunRecord:
    return RunRecord.create(tmp_path, task="bench", config={"bench": {"names": ["gemm"]}, **config},
                            launcher="local", world_size=1)  # fmt: skip


def test_create_add_finish(tmp_path: Path) -> None:
    record = make(tmp_path)
    assert record.path.parent == tmp_path
    stamp, task, short = record.run_id.split("-")
    assert task == "bench" and stamp.endswith("Z") and len(short) == 6
    on_disk = json.loads((record.path / "manifest.json").read_text())
    assert on_disk["status"] == "running" and on_disk["schema_version"] == 3
    record.add_rows([GEMM_ROW, {**GEMM_ROW, "rank": 1, "passed": False, "rel_error": float("nan")}])
    record.finish("failed", "one row failed")
    back = RunRecord.load(record.path)
    assert back.manifest["status"] == "failed" and back.manifest["error"] == "one row failed"
    assert back.manifest["rows"] == 2 and back.manifest["failed_rows"] == 1
    assert [r["rank"] for r in back.rows] == [0, 1]
    assert back.rows[1]["rel_error"] is None  # NaN is not JSON: written as null
    assert all(r["run_id"] == record.run_id for r in back.rows)
    validate_manifest(back.manifest)
    # the finished record is read-only and no temporary file is left behind
    mode = os.stat(record.path / "manifest.json").st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert sorted(p.name for p in record.path.iterdir()) == ["manifest.json", "rows.jsonl"]


def test_run_ids_do_not_collide(tmp_path: Path) -> None:
    assert len({make(tmp_path).run_id for _ in range(20)}) == 20


def test_rows_are_validated(tmp_path: Path) -> None:
    record = make(tmp_path)
    with pytest.raises(jsonschema.ValidationError):
        record.add_rows([{k: v for k, v in GEMM_ROW.items() if k != "tflops"}])
    with pytest.raises(jsonschema.ValidationError):
        validate_row({**GEMM_ROW, "m": 0})
    bad_ar = {"run_id": "x", "bench": "all_reduce", "passed": True, "op": "all_reduce"}
    with pytest.raises(jsonschema.ValidationError):
        validate_row(bad_ar)


def test_manifest_schema_rejects_unknown_status(tmp_path: Path) -> None:
    manifest = dict(make(tmp_path).manifest)
    manifest["status"] = "great"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(manifest)


def test_final_status_must_be_final(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make(tmp_path).finish("running")


def test_secrets_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "wk-123")
    monkeypatch.setenv("HF_TOKEN", "hf-456")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    record = make(tmp_path, logger={"api_key": "abc", "project": "p"}, db_password="pw")
    text = (record.path / "manifest.json").read_text()
    for secret in ("wk-123", "hf-456", "abc", '"pw"'):
        assert secret not in text
    manifest = record.manifest
    assert manifest["config"]["logger"] == {"api_key": REDACTED, "project": "p"}
    assert manifest["env"]["SLURM_JOB_ID"] == "77" and manifest["env"]["NCCL_DEBUG"] == "INFO"
    assert "HF_TOKEN" not in manifest["env"]  # not a variable the run depends on
    snapshot = environment({"WANDB_API_KEY": "x", "NCCL_IB_HCA": "mlx5"})
    assert snapshot == {"NCCL_IB_HCA": "mlx5", "WANDB_API_KEY": REDACTED}
    assert is_secret_name("aws_secret_access_key") and is_secret_name("GITHUB_TOKEN")
    assert not is_secret_name("NCCL_DEBUG")
    assert redact([{"password": 1}, {"size": 2}]) == [{"password": REDACTED}, {"size": 2}]


def test_close_if_unfinished(tmp_path: Path) -> None:
    record = make(tmp_path)
    assert close_if_unfinished(record.path, "failed", "rank 0 was killed")
    manifest = json.loads((record.path / "manifest.json").read_text())
    assert (manifest["status"], manifest["error"]) == ("failed", "rank 0 was killed")
    assert not close_if_unfinished(record.path, "interrupted", "again")  # a finished record stays as it is
    assert not close_if_unfinished(tmp_path / "nothing-here", "failed", "x")


def test_rows_are_appended_not_rewritten(tmp_path: Path) -> None:
    # A rewrite per call made a long training run quadratic: the file must only grow.
    record = make(tmp_path)
    record.add_rows([GEMM_ROW])
    rows_file = record.path / "rows.jsonl"
    with open(rows_file) as held:  # a rewrite would replace the file this handle reads
        for rank in range(1, 4):
            record.add_rows([{**GEMM_ROW, "rank": rank}])
        assert [json.loads(line)["rank"] for line in held.read().splitlines()] == [0, 1, 2, 3]
    record.finish("ok")
    assert json.loads((record.path / "manifest.json").read_text())["rows"] == 4


def test_a_failed_append_leaves_no_part_of_its_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = make(tmp_path)
    record.add_rows([GEMM_ROW])
    before = (record.path / "rows.jsonl").read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:  # the disk fills half-way through the rows
        if len(data) > 10:
            real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(RecordError, match="No space left on device"):
        record.add_rows([{**GEMM_ROW, "rank": 1}, {**GEMM_ROW, "rank": 2}])
    monkeypatch.undo()
    assert (record.path / "rows.jsonl").read_bytes() == before
    record.finish("failed", "disk full")
    assert json.loads((record.path / "manifest.json").read_text())["rows"] == 1


@pytest.mark.parametrize("tail_bytes", [1 << 16, 16])  # the torn row found in one read, or over several
def test_a_torn_last_row_is_dropped_when_the_run_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           tail_bytes: int) -> None:  # fmt: skip
    monkeypatch.setattr(run_module, "TAIL_BYTES", tail_bytes)
    record = make(tmp_path)
    record.add_rows([GEMM_ROW, {**GEMM_ROW, "rank": 1}])
    with open(record.path / "rows.jsonl", "a") as fh:  # rank 0 died in the middle of a row
        fh.write(json.dumps({**GEMM_ROW, "rank": 2})[:40])
    assert len(RunRecord.load(record.path).rows) == 2
    assert close_if_unfinished(record.path, "failed", "rank 0 was killed")
    manifest = json.loads((record.path / "manifest.json").read_text())
    assert manifest["rows"] == 2 and any("cut off mid-write" in n for n in manifest["notes"])
    assert (record.path / "rows.jsonl").read_text().endswith("\n")
    (entry,) = [run for run in iter_runs(tmp_path)]
    assert entry.damage is None and entry.rows == 2


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_atomic(target, "old")
    with pytest.raises(TypeError):  # the write fails half-way: not a string
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left


DATA = Path(__file__).resolve().parents[1] / "data"


def test_version_1_records_still_validate() -> None:
    """Schema version 2 extends version 1: a real version-1 run validates under both."""
    record = RunRecord.load(DATA / "v1-run")
    assert record.manifest["schema_version"] == 1
    validate_manifest(record.manifest, version=1)
    validate_manifest(record.manifest)
    for row in record.rows:
        validate_row(row, version=1)
        validate_row(row)
    assert {r["bench"] for r in record.rows} == {"gemm", "all_reduce"}


def test_files_are_written_atomically_and_listed(tmp_path: Path) -> None:
    record = make(tmp_path)
    record.add_file("plot.png", b"\x89PNG fake")
    with pytest.raises(ValueError):
        record.add_file("../escape.png", b"x")
    record.finish("ok")
    assert record.manifest["files"] == ["plot.png"]
    assert (record.path / "plot.png").read_bytes() == b"\x89PNG fake"
    assert not os.stat(record.path / "plot.png").st_mode & stat.S_IWUSR
