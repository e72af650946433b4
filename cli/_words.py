"""Library messages in CLI words: ``load_problem`` and ``analyze`` argument names become the options of
``curvlens analyze``, recommendation context keys the option that sets them.

The library names its arguments (``data_keys: expected ...``, ``pass model='pkg.module:factory'``,
``pass trust=True``); on the command line the same advice must name the options
(``--data-keys: expected ...``, ``pass --model pkg.module:factory``, ``pass --trust-checkpoint``).
"""

from __future__ import annotations

import re

#: load_problem argument -> analyze option; ``True`` marks a flag (``trust=True`` -> ``--trust-checkpoint``)
ARGUMENT_OPTIONS: dict[str, tuple[str, bool]] = {
    "checkpoint": ("CHECKPOINT", False),
    "model": ("--model", False),
    "data": ("--data", False),
    "data_keys": ("--data-keys", False),
    "loss": ("--loss", False),
    "batch_size": ("--batch-size", False),
    "num_samples": ("--num-samples", False),
    "trust": ("--trust-checkpoint", True),
    "device": ("--device", False),
    "dtype": ("--dtype", False),
}

#: analyze's own arguments (of :func:`curvlens.diagnostics.analyze`) -> analyze options
ANALYZE_OPTIONS: dict[str, tuple[str, bool]] = {
    "budget": ("--budget", False),
    "budget_seconds": ("--budget", False),
    "lr": ("--lr", False),
    "momentum": ("--momentum", False),
    "batch_sizes": ("--batch-sizes", False),
    "curvature": ("--curvature", False),
    "which": ("--only", False),
    "skip": ("--skip", False),
    "generator": ("--seed", False),
    "per_layer": ("--per-layer", True),
}

#: recommendation context keys -> the option that sets them: analyze's own, else ``curvlens recommend``'s
CONTEXT_OPTIONS: dict[str, tuple[str, str]] = {
    "batch_size": ("analyze", "--batch-size"),
    "lr": ("analyze", "--lr"),
    "momentum": ("analyze", "--momentum"),
    "dataset_size": ("recommend", "--dataset-size"),
    "memory_bytes": ("recommend", "--memory"),
    "time_budget_s": ("recommend", "--time-budget"),
    "layer_types": ("recommend", "--layers"),
    "optimizer": ("recommend", "--optimizer"),
    "phase": ("recommend", "--phase"),
}

_ALL = {**ANALYZE_OPTIONS, **ARGUMENT_OPTIONS}
_NAMES = "|".join(sorted(map(re.escape, _ALL), key=len, reverse=True))
# name=VALUE with a quoted value or a bare word (identifier, number); or name= alone
_ASSIGN = re.compile(rf"(?<![\w.-])({_NAMES})=(?:'([^'\s]*)'|\"([^\"\s]*)\"|(True|False|[\w.]+))?")
_LEADING = re.compile(rf"^({_NAMES}): ")
_CONTEXT = re.compile(r"set (\w+) in the context")


def _context(m: re.Match) -> str:
    where = CONTEXT_OPTIONS.get(m.group(1))
    if where is None:
        return m.group(0)
    command, option = where
    return f"pass {option}" if command == "analyze" else f"pass {option} to `curvlens recommend RESULTS.h5`"


def _assignment(m: re.Match) -> str:
    option, is_flag = _ALL[m.group(1)]
    value = next((g for g in m.groups()[1:] if g is not None), None)
    if is_flag:
        return option if value in (None, "True") else f"no {option}"
    return option if value is None else f"{option} {value}"


def to_cli(message: str) -> str:
    """Rewrite a library message so that it names ``analyze``'s options instead of arguments.

    Example:
        >>> to_cli("data_keys: expected two names 'INPUTS,TARGETS' (e.g. data_keys='images,labels')")
        "--data-keys: expected two names 'INPUTS,TARGETS' (e.g. --data-keys images,labels)"
        >>> to_cli("refused: pass trust=True only if you trust it; check data=/data_keys= and model=")
        'refused: pass --trust-checkpoint only if you trust it; check --data/--data-keys and --model'
        >>> to_cli("not certified: raise budget=; set memory_bytes in the context: rejects ...")
        'not certified: raise --budget; pass --memory to `curvlens recommend RESULTS.h5`: rejects ...'
    """
    message = _LEADING.sub(lambda m: f"{_ALL[m.group(1)][0]}: ", message)
    message = _CONTEXT.sub(_context, message)
    return _ASSIGN.sub(_assignment, message)


def recommend_to_cli(message: str) -> str:
    """A recommendation's text in ``curvlens recommend``'s own options (every context key is one).

    Example:
        >>> recommend_to_cli("lbfgs: set memory_bytes in the context: its history needs memory")
        'lbfgs: pass --memory: its history needs memory'
    """
    def here(m: re.Match) -> str:
        where = CONTEXT_OPTIONS.get(m.group(1))
        return m.group(0) if where is None else f"pass {where[1]}"

    return _CONTEXT.sub(here, message)


def analysis_to_cli(message: str) -> str:
    """A note of an analysis in ``analyze``'s options: solver arguments (``max_matvecs``) become
    ``--budget``, context keys the option that sets them.

    Example:
        >>> analysis_to_cli("bottom: not converged; increase max_matvecs (now 48) or loosen rtol (now 0.01)")
        'bottom: not converged; raise --budget (this measurement had 48 products)'
    """
    from curvlens.report.wording import analysis_words

    message = analysis_words(message)
    for pattern, repl in _CLI_PHRASES:
        message = pattern.sub(repl, message)
    return to_cli(message)


#: API advice without a single argument -> the option that does the same on the command line
_CLI_PHRASES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"resolve it with resolve_bottom_float64 or analyze a float64 model"), "pass --dtype float64"),
    (re.compile(r"re-run analyze in float64 \(model\.double\(\)\)"), "re-run with --dtype float64"),
    (re.compile(r"analyze a float64 model|model\.double\(\)"), "--dtype float64"),
    (re.compile(r"(?:with )?a larger budget\b(?!=)"), "with a larger --budget"),
)
