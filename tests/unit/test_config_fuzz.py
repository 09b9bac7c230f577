"""Property-based fuzz of the config layer: random command lines of known and unknown keys with
odd values either build jobs or are refused with a ConfigError (one line, exit 2); never another
exception, and nothing is written to the results directory while deciding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import load, tasks
from harness.config.schema import RunConfig
from harness.errors import ConfigError


def _schema_keys() -> list[str]:
    import typing

    hints = typing.get_type_hints(RunConfig)
    found = []
    for name, kind in hints.items():
        if dataclasses.is_dataclass(kind):
            sub = typing.get_type_hints(kind)
            found.extend(f"{name}.{k}" for k in sub)
        else:
            found.append(name)
    return found


KEYS = _schema_keys()
ODD = ["", "-1", "0", "1", "1.5", "1e309", "nan", "inf", "-inf", "99999999999999999999", "null", "true", "[]", "{}",
       "[1,2", "'", '"', "${nope}", "${oc.env:HARNESS_FUZZ_UNSET}", "1K", "-1M", "64G", "auto", "x" * 300, "ü", "a=b",
       "[128x128x128]", "float99", "cuda", "cpu", "8..16384x2", "1,2", "\\"]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(ODD),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
)
KEY = st.one_of(st.sampled_from(KEYS), st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True))
PRESETS = ["engine=nosuch", "model=tiny", "bench=quick", "hardware=cpu", "~train"]
OVERRIDE = st.one_of(
    st.tuples(KEY, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(KEY, VALUES).map(lambda kv: f"+{kv[0]}={kv[1]}"),
    st.sampled_from(PRESETS),
)
COMMANDS = [["bench", "all_reduce"], ["bench", "gemm"], ["bench", "memory"], ["bench", "nosuch"], ["train"], ["accept"],
            ["results", "list"], ["results", "compare"], ["bench"]]  # fmt: skip


@pytest.fixture(scope="module")
def empty_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "results"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(COMMANDS), overrides=st.lists(OVERRIDE, max_size=4))
def test_random_command_lines_build_or_are_refused_in_one_line(
    empty_results: Path, command: list[str], overrides: list[str]
) -> None:
    argv = [*command, *overrides, f"results.dir={empty_results}", "launch.nproc=2"]
    try:
        jobs = load.load(load.parse(argv))
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text.strip() and "Traceback" not in text, text
    else:
        assert jobs and all(job.task in tasks.TASKS for job in jobs)
    assert not empty_results.exists() or not any(empty_results.iterdir()), "a refused or unrun input wrote a run"
