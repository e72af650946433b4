"""Hints of an analysis in the words of the interface that made it.

The solvers inside :func:`curvlens.diagnostics.analyze` say what to raise in their own
arguments ("increase max_matvecs (now 48)"), but the caller of ``analyze`` passes one
``budget=``, which each stage's ``max_matvecs`` is a share of. :func:`analysis_words` rewrites
such hints into ``analyze``'s arguments; the report and the summary table apply it (or the
caller's own translation, e.g. the command line's option names) to every note they show.

Example:
    >>> analysis_words("not converged; increase max_matvecs (now 48) or loosen rtol (now 0.01)")
    'not converged; raise budget= (this measurement had 48 products)'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["analysis_words", "translate_all", "Words"]

Words = Callable[[str], str]

_REWRITES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"(?:increase|raise) max_matvecs \(now (\d+)\)(?: or loosen rtol \(now [^)]*\))?"),
     r"raise budget= (this measurement had \1 products)"),
    (re.compile(r"(?:increase|raise) (?:the eigensolver's |the solver's )?max_matvecs"), "raise budget="),
    (re.compile(r"(?<![\w.-])max_matvecs=?"), "budget="),
    (re.compile(r"more num_steps narrow the bounds"), "a larger budget= narrows the bounds"),
)


def analysis_words(text: str) -> str:
    """``text`` with solver arguments (``max_matvecs``) replaced by ``analyze``'s (``budget=``)."""
    for pattern, repl in _REWRITES:
        text = pattern.sub(repl, text)
    return text


def translate_all(obj: Any, words: Words) -> Any:
    """Apply ``words`` to every string in nested dicts / lists / tuples (other values unchanged)."""
    if isinstance(obj, str):
        return words(obj)
    if isinstance(obj, Mapping):
        return {k: translate_all(v, words) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(translate_all(v, words) for v in obj)
    return obj
