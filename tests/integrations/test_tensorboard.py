"""TensorBoard scalars, read back with tensorboard's own event reader."""

import pytest
import torch
from torch import nn

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from curvlens.hooks import CurvatureMonitor  # noqa: E402


def _run(tmp_path, tensorboard):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with CurvatureMonitor(model, nn.MSELoss(), (x, y), every=3, metrics=("lambda_max", "trace"), per_layer=True,
                          estimator="separate", tensorboard=tensorboard) as mon:
        mon.attach(opt)
        for _ in range(6):
            opt.zero_grad()
            nn.MSELoss()(model(x), y).backward()
            opt.step()
    return mon


@pytest.mark.parametrize("own_writer", [False, True])
def test_event_files_hold_the_values(tmp_path, own_writer):
    logdir = tmp_path / "tb"
    if own_writer:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(logdir))
        mon = _run(tmp_path, writer)
        writer.close()
    else:
        mon = _run(tmp_path, str(logdir))
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"curvature/lambda_max", "curvature/trace", "curvature/eos_ratio", "curvature/layer_lambda_max/0"} <= set(tags)
    for tag, col in [("curvature/lambda_max", "lambda_max"), ("curvature/trace_stderr", "trace_stderr"),
                     ("curvature/layer_trace/2", "layer_trace:2")]:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [3, 6]
        assert [e.value for e in events] == pytest.approx([r.values[col] for r in mon.records], rel=1e-6)
