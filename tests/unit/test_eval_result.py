"""The eval-result line: written by the evaluate command, read back by the operator."""

from __future__ import annotations

import pytest

from lvm_serving.contracts import eval_result as er

RESULT = {"format": er.RESULT_FORMAT, "format_version": er.RESULT_FORMAT_VERSION, "n": 4,
          "hit@1": 0.25, "hit@5": 0.5, "hit@10": 0.75, "per_lane": {"3": {"n": 4}}}


def test_a_result_line_round_trips_and_is_usable():
    line = er.encode(RESULT)
    assert "\n" not in line and line.index('"format"') < line.index('"n"')  # keys sorted
    assert er.parse(f"torch warning\n{line}\n\n") == RESULT
    assert er.error_of(RESULT) is None


@pytest.mark.parametrize("stdout", ["", "\n \n", "Traceback (most recent call last):", "[1, 2]"])
def test_no_result_line_is_none(stdout):
    assert er.parse(stdout) is None


def test_errors_say_what_failed():
    failed = er.error_result("checkpoint /x: sha256 mismatch", "ChecksumMismatchError")
    assert er.parse(er.encode(failed)) == failed
    assert er.error_of(failed) == "ChecksumMismatchError: checkpoint /x: sha256 mismatch"
    assert er.error_of({"format": "other"}).startswith("unexpected evaluation output: ")


def test_compact_keeps_the_contract_keys_lanes_in_order():
    lane = {"n": 2, "hit@1": 0.5, "hit@5": 1.0, "hit@10": 1.0, "seconds": 9.0}
    full = {**{k: 0.5 for k in er.OVERALL_KEYS}, "extra": 1,
            "per_lane": {"10": lane, "2": lane}}
    out = er.compact(full)
    assert set(out) == {*er.OVERALL_KEYS, "per_lane"}
    assert list(out["per_lane"]) == ["2", "10"]
    assert set(out["per_lane"]["2"]) == set(er.LANE_KEYS)
