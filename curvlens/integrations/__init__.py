"""Optional adapters of :class:`~curvlens.hooks.CurvatureMonitor`: TensorBoard scalars
(:mod:`curvlens.integrations.tensorboard`, extra ``curvlens[tensorboard]``) and a Lightning
callback (:mod:`curvlens.integrations.lightning`, extra ``curvlens[lightning]``).

Nothing is imported here: each submodule imports its package on first use.
"""
