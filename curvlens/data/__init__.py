"""Built-in data and models: the deterministic demo problem used by ``curvlens analyze --demo``."""

from curvlens.data.demo import DemoProblem, demo_model, demo_problem, make_spirals, train_demo_model

__all__ = ["DemoProblem", "demo_model", "demo_problem", "make_spirals", "train_demo_model"]
