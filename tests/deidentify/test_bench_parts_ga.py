"""The benchmark's parts run on small inputs and report what bench/deidentify.py reads."""

from __future__ import annotations

from bench.deidentify_parts import kanon_check_seconds, pseudonym_rate


def test_pseudonym_rate_reports_ids_and_readings_rows_per_second() -> None:
    result = pseudonym_rate(n=2000, repeats=1)
    assert result["ids"] == 2000 and result["ids_per_s_median"] > 0
    assert result["readings_rows"] == 96 * (2000 // 96) and result["readings_rows_per_s_median"] > 0


def test_kanon_check_seconds_reports_the_check_and_its_enforcement() -> None:
    result = kanon_check_seconds(rows=3000, repeats=1)
    # The shape of the report only: how fast is bench/deidentify_parts.py's to say, on its own
    # inputs (3 000 rows are checked in well under the 1 ms the report rounds to).
    assert result["rows"] == 3000 and result["target_check_s"] == 2.0
    assert len(result["check_s_all"]) == 1 and result["check_s_median"] >= 0
    assert result["enforce_k15_suppressed"] <= 14  # every default quasi-identifier reaches *
