"""The unit formulas against values computed by hand."""

import pytest

from harness import units


@pytest.mark.parametrize(
    ("op", "n", "factor"),
    [
        ("all_reduce", 2, 1.0),  # 2(n-1)/n
        ("all_reduce", 8, 1.75),
        ("all_reduce", 1, 0.0),
        ("reduce_scatter", 4, 0.75),  # (n-1)/n
        ("all_gather", 8, 0.875),
        ("all_to_all", 2, 0.5),
        ("broadcast", 16, 1.0),
        ("reduce", 3, 1.0),
        ("sendrecv", 5, 1.0),
    ],
)
def test_bus_factor(op: str, n: int, factor: float) -> None:
    assert units.bus_factor(op, n) == pytest.approx(factor)


def test_bandwidths_by_hand() -> None:
    # 64 MiB in 40 ms: 67108864 / 0.04 / 1e9 = 1.6777216 GB/s algbw; busbw x 2*7/8 on 8 ranks.
    assert units.algbw_gbps(67108864, 0.04) == pytest.approx(1.6777216)
    assert units.busbw_gbps("all_reduce", 67108864, 0.04, 8) == pytest.approx(1.6777216 * 1.75)


def test_flops_by_hand() -> None:
    assert units.gemm_flops(8192, 8192, 8192) == 2 * 8192**3 == 1_099_511_627_776
    # 8192^3 matmul in 1.4 ms: 1.0995e12 / 1.4e-3 / 1e12 = 785.37 TFLOP/s
    assert units.tflops(units.gemm_flops(8192, 8192, 8192), 1.4e-3) == pytest.approx(785.365, rel=1e-5)
    assert units.gemm_flops(3, 5, 7) == 210
    # HPL: 2/3 * 1000^3 + 3/2 * 1000^2 = 666,666,666.67 + 1,500,000
    assert units.hpl_flops(1000) == pytest.approx(668_166_666.667)


def test_unknown_op_and_bad_world() -> None:
    with pytest.raises(ValueError, match="all_reduce"):
        units.bus_factor("allreduce", 2)
    with pytest.raises(ValueError):
        units.bus_factor("all_reduce", 0)


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("1024", 1024),
        (4096, 4096),
        ("1K", 1024),
        ("64M", 64 * 2**20),
        ("8G", 8 * 2**30),
        ("2KiB", 2048),
        ("1.5K", 1536),
        ("16MB", 16 * 2**20),
    ],
)
def test_parse_bytes(text: object, nbytes: int) -> None:
    assert units.parse_bytes(text) == nbytes


@pytest.mark.parametrize("text", ["abc", "-5", -5, "1.3", "12Q", "", "1e9", True])
def test_parse_bytes_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        units.parse_bytes(text)


def test_format_bytes_round_trips() -> None:
    for nbytes in (1, 1000, 1024, 3 * 2**20, 2**30, 5 * 2**40):
        assert units.parse_bytes(units.format_bytes(nbytes)) == nbytes
    assert units.format_bytes(64 * 2**20) == "64M"


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [(512, "512 B"), (1536, "1.50 KiB"), (5_872_025, "5.60 MiB"), (80 * 2**30, "80.0 GiB"), (1.07 * 2**40, "1.07 TiB")],
)
def test_human_bytes(nbytes: float, text: str) -> None:
    assert units.human_bytes(nbytes) == text
