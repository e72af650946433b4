"""Side-by-side comparison of several analyses (checkpoints along a run)."""

from __future__ import annotations

import base64
import json
import re

import pytest

from curvlens.report import comparison_rows, comparison_table, write_comparison
from curvlens.report._format import fmt_pm
from curvlens.report._mpl import PNG_SIGNATURE
from tests.report._fixtures import empty_analysis, full_analysis


def test_comparison_table_side_by_side():
    a, b = full_analysis(lr=0.05), full_analysis(lr=0.01)
    header, rows = comparison_rows([a, empty_analysis(), b], ["step 10", "step 0", "step 20"])
    assert header == ["quantity", "step 10", "step 0", "step 20"]
    by = {r[0]: r[1:] for r in rows}
    assert by["stability threshold 2/lr"] == ["40", "not measured", "200"]
    assert by["sharpness ratio λmax / threshold"] == ["1.25", "not measured", "0.25"]
    s = a.summary()
    assert by["trace"][0] == fmt_pm(s["trace"], s["trace_stderr"])
    # certified λmin < 0: the condition number is stated as undefined (a reason), not dropped as unmeasured
    assert by["condition number λmax/λmin"] == ["undefined", "not measured", "undefined"]
    text = comparison_table([a, empty_analysis(), b], ["step 10", "step 0", "step 20"])
    lines = text.splitlines()
    assert lines[0].split() == ["quantity", "step", "10", "step", "0", "step", "20"]
    assert any(line.startswith("stability threshold 2/lr") and line.split()[-4:] == ["40", "not", "measured", "200"]
               for line in lines)


def test_write_comparison_files(tmp_path):
    runs = [full_analysis(), full_analysis(lr=0.01)]
    paths = write_comparison(runs, ["<a>", "b"], tmp_path / "cmp", title="along training")
    assert set(paths) == {"html", "figure", "json"}
    png = paths["figure"].read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    text = paths["html"].read_text(encoding="utf-8")
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert [base64.b64decode(x) for x in imgs] == [png]
    assert "<th>&lt;a&gt;</th>" in text and "<th>b</th>" in text and "along training" in text
    doc = json.loads(paths["json"].read_text())
    assert doc["labels"] == ["<a>", "b"]
    assert doc["summaries"][1]["lr"] == 0.01 and doc["summaries"][0]["stability_threshold"] == pytest.approx(40.0)


@pytest.mark.parametrize("analyses, labels, exc, match", [
    ([], None, ValueError, r"analyses: expected a non-empty list of AnalysisResult, got list of length 0"),
    ("run.h5", None, ValueError, r"analyses: expected a non-empty list .* got str"),
    ([3], None, TypeError, r"analyses\[0\]: expected an AnalysisResult, got int"),
    (["E", "E"], ["one"], ValueError, r"labels: expected one label per analysis \(2\), got 1"),
    (["E"], "one", ValueError, r"labels: expected one label per analysis \(1\), got str"),
])
def test_errors(analyses, labels, exc, match):
    analyses = [empty_analysis() if x == "E" else x for x in analyses] if isinstance(analyses, list) else analyses
    with pytest.raises(exc, match=match):
        comparison_table(analyses, labels)


def test_default_labels():
    header, _ = comparison_rows([empty_analysis(), empty_analysis()])
    assert header == ["quantity", "run 1", "run 2"]
