"""Estimator tests run thousands of tiny (24 x 24) products: one intra-op thread avoids
thread oversubscription on small shared CI machines (measured 150x faster under load)."""

import torch

torch.set_num_threads(1)
