"""The benchmarks' sample rule (bench/common.py), without running a benchmark."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import common  # noqa: E402
from common import BenchError, Row, SampleError, check_sample, figure  # noqa: E402

NOT_MEASUREMENTS = [0.0, 0, -0.5, -3, math.nan, math.inf, -math.inf, None, True, "1.5", [1.0]]


@pytest.mark.parametrize("value", NOT_MEASUREMENTS, ids=repr)
def test_a_sample_that_is_not_a_measurement_fails(value):
    with pytest.raises(SampleError, match=r"row 'save, live': anchor 'QEMU'"):
        check_sample(value, "save, live", "anchor 'QEMU'")


@pytest.mark.parametrize("value", [1e-9, 0.0042, 1, 3.5, 2 ** 40])
def test_a_positive_finite_number_passes(value):
    assert check_sample(value, "row", "Ferry") == float(value)


def test_zero_passes_only_where_zero_is_what_happened():
    assert check_sample(0, "final vCPU throttle", "Ferry", zero_ok=True) == 0.0
    for value in (-1, None, math.nan):
        with pytest.raises(SampleError):
            check_sample(value, "final vCPU throttle", "Ferry", zero_ok=True)


def test_figure_is_the_median_of_good_samples():
    assert figure([0.3, 0.1, 0.2], "row", "Ferry") == 0.2


def test_one_bad_sample_fails_the_figure_rather_than_being_left_out():
    with pytest.raises(SampleError, match="sample 0.0"):
        figure([0.31, 0.0, 0.33], "[idle] total time", "anchor 'QEMU'")
    with pytest.raises(SampleError, match="sample None"):
        figure([0.31, None, 0.33], "[idle] total time", "anchor 'QEMU'")


def test_no_sample_at_all_fails():
    with pytest.raises(SampleError, match="no sample"):
        figure([], "row", "anchor 'iperf3'")


def test_a_row_checks_ferry_and_anchor_samples():
    row = Row("total time", "s", [0.2, 0.4, 0.3], [0.1, 0.1], "QEMU", "lower")
    assert (row.ferry, row.anchor, row.ratio) == (0.3, 0.1, pytest.approx(3.0))
    with pytest.raises(SampleError, match=r"row 'total time': anchor 'QEMU': sample 0.0"):
        Row("total time", "s", [0.2], [0.3, 0.0], "QEMU", "lower")
    with pytest.raises(SampleError, match=r"row 'total time': Ferry: sample nan"):
        Row("total time", "s", [math.nan], [0.3], "QEMU", "lower")


def test_a_row_whose_anchor_tool_is_missing_says_why():
    row = Row("total time", "s", [0.2], None, "QEMU", "lower", note="qemu-system-x86_64 not installed")
    assert row.anchor is None and row.ratio is None
    assert "not installed" in common.render_table("t", [row])


def test_smoke_mode_fails_on_a_missing_anchor_tool_other_modes_say_why():
    smoke, full = common.parse_args("", ["--smoke"]), common.parse_args("", [])
    assert (smoke.mode, full.mode) == ("smoke", "full")
    with pytest.raises(BenchError, match="iperf3 not installed"):
        common.anchor_missing("iperf3 not installed", smoke)
    assert common.anchor_missing("iperf3 not installed", full) == "iperf3 not installed"
    assert common.anchor_missing(None, smoke) == ""


def test_a_failed_sample_ends_the_run_with_one_line_and_status_1(capsys):
    def main():
        Row("[idle] downtime", "s", [0.01], [0.0], "QEMU -accel tcg, same link", "lower")
        return 0
    with pytest.raises(SystemExit) as exit:
        common.run(main)
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "[idle] downtime" in err and "QEMU -accel tcg, same link" in err
