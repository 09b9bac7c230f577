"""Config composition and validation: defaults, overrides, presets, and every kind of bad input."""

from pathlib import Path

import pytest

from harness.bench.spec import bench_spec
from harness.config.compose import compose, expand_sweep
from harness.config.job import typed
from harness.config.schema import RunConfig
from harness.errors import ConfigError
from tests.helpers import prepare, suite


def test_defaults_compose_to_typed_config() -> None:
    cfg = typed(compose(["task=bench", "bench.names=[gemm]"]))
    assert isinstance(cfg, RunConfig)
    assert (cfg.device, cfg.launch.nproc, cfg.results.dir) == ("auto", "auto", "results")
    assert (cfg.bench.min_bytes, cfg.bench.max_bytes, cfg.bench.step_factor) == ("1K", "64M", 4)


def test_overrides_and_preset() -> None:
    cfg = typed(compose(["task=bench", "bench=quick", "bench.iters=7", "launch.nproc=3", "bench.dtype=[float32]"]))
    assert cfg.bench.iters == 7
    assert cfg.bench.shapes == ["128x128x128", "97x61x83"]
    assert cfg.launch.nproc == "3"
    spec = bench_spec(cfg.bench, seed=0)
    assert spec.dtypes == ("float32",)
    assert spec.options["gemm"].shapes == ((128, 128, 128), (97, 61, 83))
    assert spec.max_bytes == 64 * 1024


def test_plan_counts_cases() -> None:
    job = prepare(
        [
            "task=bench",
            "bench.names=[all_reduce]",
            "bench.min_bytes=1K",
            "bench.max_bytes=1M",
            "bench.step_factor=4",
            "device=cpu",
        ]
    )
    ((_, cases),) = suite(job).items
    # 1K, 4K, 16K, 64K, 256K, 1M; out-of-place and in-place each
    assert [c.bytes for c in cases[::2]] == [1024 * 4**i for i in range(6)]
    assert [c.in_place for c in cases[:2]] == [False, True]
    assert all(c.count * 4 == c.bytes for c in cases)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["foo=1"], "unknown config key 'foo'; valid keys at top level: accept, bench, cluster, data, debug, device"),
        (["bench.sizes=1"], "unknown config key 'bench.sizes'; valid keys at bench: array_bytes, dtype"),
        (["bench=huge"], "unknown bench preset 'huge'; choices: default, quick"),
        (["bench.iters=abc"], "bench.iters"),
        (["bench.iters=0"], "bench.iters=0 must be a whole number >= 1"),
        (["bench.min_bytes=abc"], "bench.min_bytes: 'abc' is not a size"),
        (["bench.min_bytes=-4"], "bench.min_bytes"),
        (["bench.min_bytes=1M", "bench.max_bytes=1K"], "max_bytes must be >= min_bytes"),
        (["bench.step_factor=1"], "bench.step_factor=1 must be a whole number >= 2"),
        (["bench.dtype=float13"], "unknown dtype 'float13' (did you mean 'float32'?); choices: float64, float32, tf32"),
        (["bench.dtype=tf32"], "'tf32' is not available for all_reduce on cpu; choices: float64"),
        (["bench.shapes=[12x12]"], "'12x12' is not a shape"),
        (["bench.shapes=[0x4x4]"], "'0x4x4' is not a shape"),
        (["device=tpu"], "device='tpu' is not a device; choices: auto, cpu, cuda"),
        (["device=cuda"], "device=cuda but no CUDA GPU is visible"),
        (["debug.fault=explode"], "debug.fault='explode'; choices: none, wrong_result, raise, hang"),
        (["bench.max_bytes=64T"], "max_bytes=64T (70,368,744,177,664 bytes): all_reduce needs 393216.0 GiB"),
        (["bench.groups=0"], "bench.groups=0 must be a whole number >= 1"),
        (["bench.redop=mean"], "bench.redop: unknown reduction 'mean'; choices: sum, max, min, prod, avg"),
        (["bench.in_place=maybe"], "bench.in_place='maybe'; choices: both, true, false"),
        (["bench.m=[1024]"], "also give n, k"),
        (["bench.m=8:4:1", "bench.n=1", "bench.k=1"], "stop is smaller than start"),
        (["bench.m=a:b:c", "bench.n=1", "bench.k=1"], "use start:stop:step"),
        (["bench.hpl_n=[0]"], "bench.hpl_n: 0 is not a positive whole number"),
        (["bench.array_bytes=lots"], "bench.array_bytes: 'lots' is not a size"),
        (["telemetry.interval_ms=0"], "telemetry.interval_ms=0 must be a whole number >= 1"),
        (["launch.bootstrap=pmix"], "launch.bootstrap='pmix'; choices: auto, mpi"),
    ],
)
def test_bad_input_is_one_clear_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        prepare(["task=bench", "bench.names=[all_reduce]", *overrides])
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_gemm_shape_too_large_for_memory() -> None:
    with pytest.raises(
        ConfigError, match=r"200000x200000x200000 in float32 needs [0-9.]+ GiB on each device but .* GiB is free"
    ):
        prepare(["task=bench", "bench.names=[gemm]", "bench.shapes=[200000x200000x200000]", "device=cpu"])


@pytest.mark.parametrize("dtype", ["tf32", "float8"])
def test_gemm_dtype_the_cpu_lacks_is_refused(dtype: str) -> None:
    with pytest.raises(ConfigError, match=f"'{dtype}' is not available for gemm on cpu; choices: float64, float32"):
        prepare(["task=bench", "bench.names=[gemm]", f"bench.dtype={dtype}", "device=cpu"])


def test_gemm_grid_from_ranges() -> None:
    job = prepare(["task=bench", "bench.names=[gemm]", "bench.m=64:256:64", "bench.n=[32]", "bench.k=48",
                   "bench.shapes=[8x8x8]", "device=cpu", "bench.dtype=float32"])  # fmt: skip
    ((_, cases),) = suite(job).items
    assert [(c.m, c.n, c.k) for c in cases] == [(8, 8, 8), (64, 32, 48), (128, 32, 48), (192, 32, 48),
                                                          (256, 32, 48)]  # fmt: skip


def test_aliases_expand() -> None:
    job = prepare(["task=bench", "bench.names=[all]", "bench=quick", "device=cpu"])
    plan = suite(job)
    names = [bench.name for bench, _ in plan.items]
    assert names == ["gemm", "memory", "host_link", "hpl", "all_reduce", "all_gather", "reduce_scatter",
                     "broadcast", "reduce", "all_to_all", "sendrecv"]  # fmt: skip
    assert "host_link: not applicable on cpu (no device memory, no host link); skipped" in plan.notes


def test_no_benchmark_named() -> None:
    with pytest.raises(ConfigError, match="no benchmark named"):
        prepare(["task=bench"])


def test_unwritable_results_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"results\.dir"):
        prepare(["task=bench", "bench.names=[gemm]", f"results.dir={blocker}/sub"])


def test_expand_sweep_is_the_cartesian_product() -> None:
    jobs = expand_sweep(["task=bench", "bench.dtype=float32,bfloat16", "bench.iters=1,2", "seed=3"])
    assert len(jobs) == 4
    assert ["task=bench", "bench.dtype=bfloat16", "bench.iters=2", "seed=3"] in jobs
    assert expand_sweep(["task=bench", "bench.names=[gemm,all_reduce]"]) == [
        ["task=bench", "bench.names=[gemm,all_reduce]"]
    ]
