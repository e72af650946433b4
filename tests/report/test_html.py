"""report.html: self-contained, every figure embedded, headline numbers, escaping, atomic writes."""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

import curvlens.report.html as report_html
from curvlens.recommend import recommend
from curvlens.report import FIGURES, headline_rows, write_report
from curvlens.report._mpl import PNG_SIGNATURE
from tests.report._fixtures import empty_analysis, full_analysis

IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    a = full_analysis()
    rec = recommend(a)
    paths = write_report(a, out / "nested" / "dir", recommendation=rec, title="ckpt <10> & co")
    return a, rec, paths


def test_every_figure_embedded_and_saved_as_png(full_report):
    a, _, paths = full_report
    assert set(paths) == {"html", "density", "sharpness", "per_layer", "noise", "gradient_noise"}
    text = paths["html"].read_text(encoding="utf-8")
    embedded = [base64.b64decode(m) for m in IMG.findall(text)]
    assert len(embedded) == len(FIGURES) == 5
    for key, fname, *_ in FIGURES:
        data = paths[key].read_bytes()
        assert paths[key].name == fname and data.startswith(PNG_SIGNATURE) and len(data) > 5000
        assert data in embedded  # the PNG on disk is the one in the report
    assert "not measured." not in text
    # self-contained: no external resources
    assert not re.search(r'(src|href)="(?!data:)', text)
    assert "<script" not in text


def test_headline_numbers_and_metadata_present(full_report):
    a, _, paths = full_report
    text = paths["html"].read_text(encoding="utf-8")
    for _, label, value, note in headline_rows(a):
        assert f"<td>{html.escape(label)}</td>" in text
        assert f'<td class="num">{html.escape(value)}</td>' in text
    assert "± " in text and "UNSTABLE" in text and "quadrature bounds [" in text
    assert "ckpt &lt;10&gt; &amp; co" in text and "<title>ckpt &lt;10&gt; &amp; co</title>" in text
    # metadata: the versions and each component's status
    assert "<td>torch</td>" in text and "<td>curvlens</td>" in text
    for comp in ("top", "bottom", "trace", "density", "noise", "per_layer"):
        assert f"<td>{comp}</td>" in text
    assert html.escape(a.density.info.status) in text


def test_untrusted_text_is_escaped(full_report):
    _, _, paths = full_report
    text = paths["html"].read_text(encoding="utf-8")
    assert "fc&lt;script&gt;.weight" in text and "fc<script>" not in text
    assert "note with &lt;b&gt;html&lt;/b&gt; &amp; ampersand" in text


def test_recommendation_section(full_report):
    _, rec, paths = full_report
    text = paths["html"].read_text(encoding="utf-8")
    assert rec.candidates, "the fixture should produce a ranked candidate"
    section = text.split("<h2>Recommendation</h2>")[1].split("<h2")[0]
    assert html.escape(rec.candidates[0].label) in section
    assert html.escape(rec.candidates[0].reasons[0]) in section
    for w in rec.warnings:
        assert html.escape(w) in section


def test_unmeasured_parts_say_not_measured(tmp_path):
    paths = write_report(empty_analysis(), tmp_path)
    assert set(paths) == {"html"}
    text = paths["html"].read_text(encoding="utf-8")
    assert IMG.findall(text) == []
    for _, _, section, _, _ in FIGURES:
        assert f"{html.escape(section)}: not measured." in text
    assert "No recommendation was computed" in text
    assert not list(tmp_path.glob("*.png"))


def test_stale_pngs_of_a_previous_report_are_removed(tmp_path):
    a = full_analysis()
    write_report(replace(a, density=None, per_layer=None, gradient_noise=None), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["noise.png", "sharpness.png"]
    write_report(replace(a, density=None, per_layer=None, gradient_noise=None, noise=None), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["sharpness.png"]
    unrelated = tmp_path / "mine.png"
    unrelated.write_bytes(b"x")
    write_report(replace(a, density=None, per_layer=None, gradient_noise=None, noise=None), tmp_path)
    assert unrelated.exists()


def _sharp_only():
    a = full_analysis()
    return replace(a, density=None, per_layer=None, gradient_noise=None, noise=None)


def test_failure_while_plotting_leaves_the_old_report_intact(tmp_path, monkeypatch):
    old = write_report(_sharp_only(), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(analysis):
        raise RuntimeError("plotting failed")

    broken = tuple((k, f, s, c, boom if k == "noise" else fn) for k, f, s, c, fn in FIGURES)
    monkeypatch.setattr(report_html, "FIGURES", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(full_analysis(), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert old["html"].read_text(encoding="utf-8").count("data:image/png") == 1


def test_failure_while_writing_leaves_no_half_written_report(tmp_path, monkeypatch):
    old = write_report(_sharp_only(), tmp_path)["html"].read_bytes()
    real = report_html.atomic_write

    class Interrupted(Exception):
        pass

    def failing(path, mode="w", **kw):
        if Path(path).name != "report.html":
            return real(path, mode, **kw)

        class Ctx:
            def __enter__(self):
                self.cm = real(path, mode, **kw)
                f = self.cm.__enter__()
                f.write("<html>half")  # written to the temporary file only
                raise_now = Interrupted("disk full")
                self.cm.__exit__(Interrupted, raise_now, None)
                raise raise_now

            def __exit__(self, *exc):
                return False

        return Ctx()

    monkeypatch.setattr(report_html, "atomic_write", failing)
    with pytest.raises(Interrupted):
        write_report(full_analysis(), tmp_path)
    assert (tmp_path / "report.html").read_bytes() == old
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(analysis=3), TypeError, r"analysis: expected an AnalysisResult .* got int"),
    (dict(recommendation="sgd"), TypeError, r"recommendation: expected a Recommendation .* got str"),
    (dict(title=5), TypeError, r"title: expected a str or None, got int"),
    (dict(out_dir=None), TypeError, r"out_dir: expected a folder path .* got None"),
    (dict(out_dir="FILE"), NotADirectoryError, r"out_dir: .* exists and is not a folder"),
])
def test_errors(tmp_path, kwargs, exc, match):
    target = tmp_path / "a_file"
    target.write_text("x")
    args = dict(analysis=empty_analysis(), out_dir=tmp_path / "out", recommendation=None, title=None)
    args.update(kwargs)
    if args["out_dir"] == "FILE":
        args["out_dir"] = target
    with pytest.raises(exc, match=match):
        write_report(args.pop("analysis"), args.pop("out_dir"), **args)
    assert not (tmp_path / "out").exists()


def test_report_of_an_analysis_loaded_from_hdf5(tmp_path):
    from curvlens.io.hdf5 import load_result, save_result

    a = full_analysis()
    save_result(a, tmp_path / "results.h5")
    b = load_result(tmp_path / "results.h5")
    assert headline_rows(b) == headline_rows(a)
    paths = write_report(b, tmp_path / "out")
    assert set(paths) == {"html", "density", "sharpness", "per_layer", "noise", "gradient_noise"}
    assert len(IMG.findall(paths["html"].read_text(encoding="utf-8"))) == 5
