"""Reading runs back: tolerant manifests and rows, summaries, damaged runs, the index."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.results import read
from harness.results.read import DamagedRun, iter_runs, read_manifest, read_rows, read_run
from tests.unit.test_catalog_helpers import KINDS, T0, copy_v1, gemm_rows, iso, manifest, new_id, record_run, write_run


def listing(results_dir: Path, **kw) -> dict[str, read.RunSummary]:
    return {r.id if not r.damaged else r.path.name: r for r in iter_runs(results_dir, kinds=KINDS, **kw)}


def test_a_v1_run_lists_with_its_facts(results_dir: Path) -> None:
    path = copy_v1(results_dir)
    [run] = iter_runs(results_dir, kinds=KINDS)
    assert run.path == path and run.damage is None and run.status == "ok" and run.task == "bench"
    assert run.schema_version == 1 and run.world_size == 2 and run.hosts == ("vm",) and run.devices == ("AMD EPYC",)
    assert run.rows == 16 and run.sweep_id is None and run.exit_code is None
    assert run.started_at is not None and iso(run.started_at) == "2026-11-28T03:10:47.766Z"
    assert run.headline is not None and run.headline.name == "gemm.tflops" and run.headline.unit == "TFLOP/s"
    assert run.headline.value == pytest.approx(0.0898542, rel=1e-5)  # the best gemm row of the run
    assert run.config["bench.iters"] == 5 and run.config["bench.names"] == ["gemm", "all_reduce"]
    assert read_manifest(path)["schema_version"] == 1
    assert {r["bench"] for r in read_rows(path)} == {"gemm", "all_reduce"}


def test_a_run_of_the_real_writer_lists(results_dir: Path) -> None:
    path = record_run(results_dir, gemm_rows(), files={"gemm.png": b"\x89PNG"})
    [run] = iter_runs(results_dir, kinds=KINDS)
    assert run.id == path.name and run.status == "ok" and run.damage is None
    assert run.rows == len(gemm_rows()) and run.files == ("gemm.png",)
    assert run.headline is not None and run.headline.value == pytest.approx(0.22)
    assert read_run(path, kinds=KINDS) == run


def test_v3_fields_and_the_headline_without_kinds(results_dir: Path) -> None:
    sweep = "7d7c9b8e-0b8f-4d55-9a3b-2f1f6f0d2a11"
    write_run(results_dir, gemm_rows(), sweep_id=sweep, summary={"gemm": {"float32": {"best_tflops": 0.11}}})
    [run] = iter_runs(results_dir)
    assert run.sweep_id == sweep and run.exit_code == 0 and run.reason == "ok" and run.schema_version == 3
    assert str(run.headline) == "gemm.float32.best_tflops 0.11"  # the manifest summary's first figure


def test_a_train_run_headlines_its_summary_row(results_dir: Path) -> None:
    from tests.unit.test_catalog_helpers import train_rows

    write_run(results_dir, train_rows(), task="train")
    [run] = iter_runs(results_dir, kinds=KINDS)
    assert run.headline is not None and run.headline.name == "train_summary.tokens_per_s"


def test_running_runs_with_a_stale_heartbeat_are_abandoned(results_dir: Path) -> None:
    now = time.time()
    fresh = write_run(results_dir, [], status="running", heartbeat_at=iso_ago(5))
    stale = write_run(results_dir, [], status="running", heartbeat_at=iso_ago(120))
    old_v2 = write_run(results_dir, [], status="running", schema=2)  # no heartbeat: the manifest's mtime counts
    os.utime(old_v2 / "manifest.json", (now - 600, now - 600))
    runs = listing(results_dir)
    assert runs[fresh.name].status == "running"
    assert runs[stale.name].status == "abandoned"
    assert runs[old_v2.name].status == "abandoned"


def test_a_torn_last_row_is_damage_unless_its_writer_is_alive(results_dir: Path) -> None:
    # A listing can land in the middle of a live run's append; a dead writer's torn row stays damage.
    half = json.dumps(gemm_rows()[1])[:30]
    live = write_run(results_dir, gemm_rows()[:1], status="running", heartbeat_at=iso_ago(5))
    dead = write_run(results_dir, gemm_rows()[:1], status="running", heartbeat_at=iso_ago(120))
    ended = write_run(results_dir, gemm_rows()[:1])
    for path in (live, dead, ended):
        with (path / "rows.jsonl").open("a") as fh:
            fh.write(half)
    runs = listing(results_dir)
    assert runs[live.name].damage is None and runs[live.name].rows == 1
    assert runs[dead.name].status == "abandoned" and "last row truncated" in (runs[dead.name].damage or "")
    assert "last row truncated" in (runs[ended.name].damage or "")


def iso_ago(seconds: float) -> str:
    from datetime import datetime, timedelta, timezone

    return iso(datetime.now(timezone.utc) - timedelta(seconds=seconds))


def _damage(results_dir: Path, how: str) -> Path:
    """A run damaged in one way."""
    if how == "no manifest":
        path = results_dir / new_id()
        path.mkdir()
        return path
    path = write_run(results_dir, gemm_rows(), files={"gemm.png": b"\x89PNG"})
    manifest_file, rows_file = path / "manifest.json", path / "rows.jsonl"
    text, lines = manifest_file.read_text(), rows_file.read_text().splitlines(keepends=True)
    if how == "manifest not JSON":
        manifest_file.write_text(text[: len(text) // 2])
    elif how == "manifest unreadable":
        manifest_file.unlink()
        manifest_file.mkdir()  # reading it fails with an OSError (permissions do not stop root)
    elif how == "manifest not an object":
        manifest_file.write_text("[1, 2]")
    elif how == "partial manifest":
        data = json.loads(text)
        del data["status"], data["started_at"]
        manifest_file.write_text(json.dumps(data))
    elif how == "last row truncated":
        rows_file.write_text("".join(lines[:-1]) + lines[-1][:30])
    elif how == "row not JSON":
        rows_file.write_text("".join([lines[0], "{not json\n", *lines[1:]]))
    elif how == "row without kind":
        rows_file.write_text("".join([lines[0], '{"run_id": "x", "passed": true}\n', *lines[1:]]))
    elif how == "rows missing":
        rows_file.write_text("".join(lines[:3]))
    elif how == "no rows file":
        rows_file.unlink()
    elif how == "plot missing":
        (path / "gemm.png").unlink()
    return path


DAMAGES = {
    "no manifest": "no manifest.json",
    "manifest not JSON": "manifest.json is not JSON",
    "manifest unreadable": "manifest.json unreadable",
    "manifest not an object": "manifest.json is not a JSON object",
    "partial manifest": "partial manifest.json: lacks status, started_at",
    "last row truncated": "rows.jsonl: last row truncated (line 8)",
    "row not JSON": "rows.jsonl: line 2 not a row",
    "row without kind": "rows.jsonl: line 2 not a row",
    "rows missing": "rows.jsonl has 3 rows, manifest says 8",
    "no rows file": "no rows.jsonl (manifest says 8 rows)",
    "plot missing": "missing file listed in manifest.json: gemm.png",
}


@pytest.mark.parametrize("how", DAMAGES)
def test_each_kind_of_damage_is_listed_with_its_reason(results_dir: Path, how: str) -> None:
    before = write_run(results_dir, gemm_rows(), started=T0.replace(hour=1))
    damaged = _damage(results_dir, how)
    after = write_run(results_dir, gemm_rows(), started=T0.replace(hour=5))
    runs = list(iter_runs(results_dir, kinds=KINDS))
    assert [r.path.name for r in runs] == sorted(p.name for p in (before, damaged, after))  # the listing went on
    by_path = {r.path: r for r in runs}
    assert by_path[before].damage is None and by_path[after].damage is None
    assert by_path[damaged].damaged
    assert by_path[damaged].damage.startswith(DAMAGES[how]), by_path[damaged].damage
    assert by_path[damaged].started_at is not None  # from the directory's name when the manifest is gone


def test_a_submitted_job_without_manifest_is_pending_not_damaged(results_dir: Path) -> None:
    path = results_dir / new_id()
    path.mkdir()
    (path / "submission.json").write_text("{}")
    [run] = iter_runs(results_dir)
    assert run.status == "pending" and run.damage is None


def test_other_folders_and_files_are_not_runs(results_dir: Path) -> None:
    (results_dir / "sweeps").mkdir()
    (results_dir / "baselines.json").write_text("{}")
    write_run(results_dir, gemm_rows())
    assert len(list(iter_runs(results_dir))) == 1
    assert list(iter_runs(results_dir / "absent")) == []


def test_read_manifest_and_rows_are_tolerant(results_dir: Path) -> None:
    path = _damage(results_dir, "row not JSON")
    assert len(read_rows(path)) == len(gemm_rows())  # the bad line is skipped
    assert read_rows(results_dir / "nowhere") == []
    with pytest.raises(DamagedRun, match=r"no manifest\.json"):
        read_manifest(results_dir / "nowhere")
    extra = manifest(new_id(), unknown_field={"kept": True})
    (results_dir / "m.json").write_text(json.dumps(extra))
    assert read_manifest(results_dir / "m.json")["unknown_field"] == {"kept": True}


def age(*paths: Path, seconds: float = 60) -> None:
    """Set back the mtimes of run directories and their files (a run written just now is read again
    at the next listing, in case a change within the file system's clock tick went unseen)."""
    when = time.time() - seconds
    for path in paths:
        for file in path.iterdir():
            os.utime(file, (when, when))
        os.utime(path, (when, when))


def test_the_index_is_written_and_used_when_warm(results_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [write_run(results_dir, gemm_rows(), started=T0.replace(minute=i)) for i in range(5)]
    age(*paths)
    cold = listing(results_dir)
    assert (results_dir / read.INDEX).is_file()
    scans = []
    real_scan = read._scan
    monkeypatch.setattr(read, "_scan", lambda p: scans.append(p.name) or real_scan(p))
    assert listing(results_dir) == cold and scans == []  # warm: no run directory is read
    # a changed run is read again, and only that one; a removed run leaves the listing
    with (paths[2] / "rows.jsonl").open("a") as fh:
        fh.write('{"kind": "gemm", "passed": true, "tflops": 9.0}\n')
    (paths[2] / "manifest.json").write_text(json.dumps({**read_manifest(paths[2]), "rows": 17}))
    for file in paths[4].iterdir():
        file.unlink()
    paths[4].rmdir()
    age(paths[2])
    runs = listing(results_dir)
    assert scans == [paths[2].name] and len(runs) == 4
    assert runs[paths[2].name].headline.value == 9.0


def test_a_run_changed_just_before_a_listing_is_read_again(results_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = write_run(results_dir, gemm_rows())
    old = write_run(results_dir, gemm_rows(), started=T0.replace(hour=1))
    age(old)
    listing(results_dir)
    scans = []
    real_scan = read._scan
    monkeypatch.setattr(read, "_scan", lambda p: scans.append(p.name) or real_scan(p))
    listing(results_dir)
    assert scans == [fresh.name]  # its mtime is too close to its scan to rule out an unseen change


def test_the_index_is_never_trusted_over_the_runs(results_dir: Path) -> None:
    path = write_run(results_dir, gemm_rows(), files={"plot.png": b"png"})
    listing(results_dir)
    index = json.loads((results_dir / read.INDEX).read_text())
    index["runs"][path.name]["status"] = "failed"  # a stale or forged entry...
    index["runs"][path.name]["key"][0] -= 1  # ...whose key no longer matches the directory
    (results_dir / read.INDEX).write_text(json.dumps(index))
    assert listing(results_dir)[path.name].status == "ok"
    (path / "plot.png").unlink()  # removing a file changes the directory: the run is read again
    assert listing(results_dir)[path.name].damage == "missing file listed in manifest.json: plot.png"


@pytest.mark.parametrize("garbage", ["", "{", "[]", '{"version": 1}', '{"version": 99, "runs": {}}'])
def test_a_broken_index_is_rebuilt(results_dir: Path, garbage: str) -> None:
    write_run(results_dir, gemm_rows())
    (results_dir / read.INDEX).write_text(garbage)
    assert len(listing(results_dir)) == 1
    assert json.loads((results_dir / read.INDEX).read_text())["version"] == 1


def test_an_unwritable_results_dir_lists_without_index(results_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(results_dir, gemm_rows())

    def refuse(*_: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(read, "write_atomic", refuse)
    assert len(listing(results_dir)) == 1 and not (results_dir / read.INDEX).exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=4000))
def test_rows_cut_anywhere_never_stop_a_listing(tmp_path_factory: pytest.TempPathFactory, cut: int) -> None:
    results_dir = tmp_path_factory.mktemp("results")
    path = write_run(results_dir, gemm_rows(), status="running")  # a run still writing: any length is possible
    text = (path / "rows.jsonl").read_text()
    cut = min(cut, len(text))
    (path / "rows.jsonl").write_text(text[:cut])
    [run] = iter_runs(results_dir, use_index=False)
    whole_row = cut < len(text) and text[cut] == "\n"  # cut just before a newline: the last row is whole
    assert run.rows == text[:cut].count("\n") + whole_row
    at_boundary = cut == 0 or text[cut - 1] == "\n" or whole_row
    assert (run.damage is None) == at_boundary, (cut, run.damage)
