"""HTML fragments of the report (every text is escaped here; no fragment trusts its input)."""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Mapping
from typing import Any, Sequence

from curvlens.report._format import as_array, fmt, fmt_pm, part

__all__ = ["esc", "table", "img", "recommendation_html", "per_layer_table", "noise_table", "metadata_html",
           "PART_NAMES", "CSS", "ul", "is_result_like"]

#: parts of an AnalysisResult whose RunInfo is listed in the metadata section
PART_NAMES = ("top", "bottom", "trace", "density", "conditioning", "sharpness", "saddle", "noise",
              "gradient_noise", "per_layer")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1050px;margin:2em auto;
padding:0 1em;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
img{max-width:100%;height:auto;border:1px solid #eee}.missing{color:#777;font-style:italic}
.warn{color:#a33}.caption{color:#444;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}
"""


_NUM = ' class="num"'


def esc(x: Any) -> str:
    """HTML-escaped ``str(x)`` (quotes included)."""
    return html.escape(str(x), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, num_cols: Sequence[int] = ()) -> str:
    """An escaped HTML table; columns in ``num_cols`` are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td{_NUM if i in num_cols else ''}>{esc(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def img(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a base64 data URI (the report stays self-contained)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def ul(items: Sequence[Any], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return "<ul>" + "".join(f"<li{attr}>{esc(x)}</li>" for x in items) + "</ul>"


def recommendation_html(rec: Any) -> str:
    """The recommendation section from ``Recommendation.to_dict()`` (or such a Mapping)."""
    d = rec.to_dict() if callable(getattr(rec, "to_dict", None)) else dict(rec)
    cands = list(d.get("candidates") or [])
    out = [f"<p>Confidence of the top choice: <b>{esc(fmt(d.get('confidence'), 2))}</b></p>"]
    if cands:
        rows = []
        for i, c in enumerate(cands, 1):
            hp = c.get("hyperparameters") or {}
            hp_text = ", ".join(f"{k}={fmt(v, 3)}" for k, v in hp.items()) or "-"
            rows.append([i, c.get("label", c.get("optimizer", "?")), fmt(c.get("score"), 3),
                         fmt(c.get("confidence"), 2), fmt(c.get("cost_per_step"), 3), hp_text])
        out.append(table(["rank", "optimizer", "score", "confidence", "cost/step (x SGD)", "hyperparameters"],
                         rows, num_cols=(0, 2, 3, 4)))
        reasons = list(cands[0].get("reasons") or [])
        if reasons:
            out.append(f"<p>Why {esc(cands[0].get('label', cands[0].get('optimizer', '')))}:</p>" + ul(reasons))
    else:
        out.append('<p class="warn">No candidate survived the constraints.</p>')
    if d.get("warnings"):
        out.append("<h3>Warnings</h3>" + ul(d["warnings"], "warn"))
    rejected = [f"{r.get('label', r.get('optimizer', '?'))}: {'; '.join(r.get('reasons') or [])}"
                for r in d.get("rejected") or []]
    if rejected:
        out.append("<h3>Rejected</h3>" + ul(rejected))
    if d.get("missing"):
        out.append("<h3>To raise confidence</h3>" + ul(d["missing"]))
    return "\n".join(out)


def _vals(x: Any, n: int) -> list[Any]:
    a = as_array(x)
    return a.reshape(-1).tolist() if a is not None and a.size == n else [None] * n


def per_layer_table(pl: Any) -> str:
    """Per-block sizes, traces (± standard error), shares and largest eigenvalues."""
    names = list(part(pl, "block_names") or [])
    n = len(names)
    cols = [_vals(part(pl, k), n) for k in ("sizes", "traces", "trace_stderr", "trace_share", "lambda_max",
                                            "lambda_max_residual", "lambda_max_share")]
    rows = []
    for i, name in enumerate(names):
        size, tr, se, ts, lm, lr, ls = (c[i] for c in cols)
        rows.append([name, fmt(int(size)) if size is not None and size == size else fmt(None), fmt_pm(tr, se),
                     _pct(ts), fmt_pm(lm, lr), _pct(ls)])
    return table(["block", "size", "trace ± stderr", "trace share", "block λmax ± residual",
                  "share of the top eigenvector"], rows, num_cols=(1, 2, 3, 4, 5))


def _pct(x: Any) -> str:
    return "" if x is None or x != x else f"{100 * float(x):.1f}%"


def noise_table(nz: Any) -> str:
    """Per-quantity full-data value, fitted law and critical batch size of the batch-size study."""
    names = list(part(nz, "quantities") or [])
    n = len(names)
    full, fa, fb, crit = (_vals(part(nz, k), n) for k in ("full_values", "fit_a", "fit_b", "critical_batch"))
    rows = [[q, fmt(full[i]), fmt(fa[i], 3), fmt(fb[i], 3), fmt(crit[i], 3)] for i, q in enumerate(names)]
    out = table(["quantity", "full-data value", "fit a", "fit b", "critical batch size"], rows,
                num_cols=(1, 2, 3, 4))
    notes = list(part(nz, "notes") or [])
    negative = [q for i, q in enumerate(names) if fa[i] is not None and fa[i] == fa[i] and fa[i] < 0]
    if negative:
        notes.append(f"fit a < 0 for {', '.join(negative)}: a variance cannot be negative, so the intercept is zero "
                     "within the noise of the fit (the error falls like 1/B over the batch sizes measured); the "
                     "slope b and the critical batch size are what the study measures")
    return out + (ul(notes) if notes else "")


def _info_row(name: str, info: Any, words: Any = str) -> list[Any]:
    return [name, fmt(part(info, "converged")), fmt(part(info, "matvecs")), fmt(part(info, "wall_time"), 3),
            fmt(part(info, "seed")), words(str(part(info, "status") or ""))]


def metadata_html(analysis: Any, versions: Mapping[str, str], created: str, *, words: Any = str) -> str:
    """Run metadata: the analysis' RunInfo, each part's RunInfo, notes, library versions (statuses
    through ``words``)."""
    info = part(analysis, "info")
    general = [["created (UTC)", created]]
    for key in ("curvature", "num_params", "num_samples", "lr", "momentum"):
        general.append([key, fmt(part(analysis, key))])
    if info is not None:
        general += [["dtype", part(info, "dtype") or ""], ["device", part(info, "device") or ""],
                    ["seed", fmt(part(info, "seed"))], ["status", words(str(part(info, "status") or ""))]]
    out = [table(["", ""], general)]
    rows = [_info_row("analysis", info, words)] if info is not None else []
    for name in PART_NAMES:
        p = part(analysis, name)
        if p is not None and part(p, "info") is not None:
            rows.append(_info_row(name, part(p, "info"), words))
    if rows:
        out.append("<h3>Components</h3>")
        out.append(table(["component", "converged", "products", "seconds", "seed", "status"], rows,
                         num_cols=(2, 3)))
    out.append("<h3>Versions</h3>" + table(["package", "version"], sorted(versions.items())))
    return "\n".join(out)


def is_result_like(obj: Any) -> bool:
    """An AnalysisResult or any object / dataclass with at least one of its parts or ``summary()``."""
    if obj is None or isinstance(obj, (str, bytes, int, float)):
        return False
    if callable(getattr(obj, "summary", None)):
        return True
    if dataclasses.is_dataclass(obj):
        return True
    return any(hasattr(obj, n) for n in PART_NAMES)
