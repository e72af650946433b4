"""Built-in data and models: the deterministic demo problem used by ``curvlens analyze --demo``."""

from curvlens.data.demo import (DEMO_LR, DEMO_MOMENTUM, DemoProblem, demo_model, demo_problem, make_spirals,
                                train_demo_model)

__all__ = ["DEMO_LR", "DEMO_MOMENTUM", "DemoProblem", "demo_model", "demo_problem", "make_spirals", "train_demo_model"]
