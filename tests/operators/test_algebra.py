"""Operator algebra against dense matrices: values, flags, blocks, counts, layouts and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.operators import Block, CurvatureOperator, DenseOperator, GGNOperator
from curvlens.operators.algebra import DiagonalOperator, IdentityOperator, ScaledOperator, ShiftedOperator, SumOperator
from curvlens.operators.protocol import LinearOperatorLike

D64 = torch.float64
N = 6
BLOCKS = (Block("layer1", 0, 4, ("w1",)), Block("layer2", 4, 6, ("w2",)))


def _sym(seed: int, ev) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(N, N)))
    A = (Q * np.asarray(ev)) @ Q.T
    return torch.from_numpy((A + A.T) / 2)


MA = _sym(0, [-1.5, 0.25, 0.5, 1.0, 2.0, 4.0])  # indefinite
MB = _sym(1, [0.1, 0.3, 0.5, 1.0, 2.0, 3.0])  # positive definite
MC = _sym(2, [0.0, 0.2, 0.4, 1.0, 1.5, 2.5])  # PSD, no blocks
DIAG = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5, 3.0], dtype=D64)
EYE = torch.eye(N, dtype=D64)


def _ops():
    return dict(A=DenseOperator(MA, blocks=BLOCKS), B=DenseOperator(MB, blocks=BLOCKS), C=DenseOperator(MC),
                I=IdentityOperator(N, dtype=D64), Dg=DiagonalOperator(DIAG))


# (expression, dense reference, is_psd)
CASES = {
    "A + c": (lambda o: o["A"] + 0.5, MA + 0.5 * EYE, False),
    "B + c": (lambda o: o["B"] + 0.5, MB + 0.5 * EYE, True),
    "c + B": (lambda o: 0.5 + o["B"], MB + 0.5 * EYE, True),
    "B + int": (lambda o: o["B"] + 2, MB + 2 * EYE, True),
    "B + 0": (lambda o: o["B"] + 0, MB, True),
    "B + negative c": (lambda o: o["B"] + -0.05, MB - 0.05 * EYE, False),
    "B - c": (lambda o: o["B"] - 0.05, MB - 0.05 * EYE, False),
    "c - B": (lambda o: 3.0 - o["B"], 3 * EYE - MB, False),
    "B.shifted(c)": (lambda o: o["B"].shifted(1.5), MB + 1.5 * EYE, True),
    "B + tensor scalar": (lambda o: o["B"] + torch.tensor(0.25), MB + 0.25 * EYE, True),
    "B + one-element tensor": (lambda o: o["B"] + torch.tensor([0.25]), MB + 0.25 * EYE, True),
    "B + numpy scalar": (lambda o: o["B"] + np.float64(0.25), MB + 0.25 * EYE, True),
    "alpha * B": (lambda o: 2.0 * o["B"], 2 * MB, True),
    "B * alpha": (lambda o: o["B"] * 2, 2 * MB, True),
    "numpy alpha * B": (lambda o: np.float64(2.0) * o["B"], 2 * MB, True),
    "tensor alpha * B": (lambda o: torch.tensor(2.0, dtype=D64) * o["B"], 2 * MB, True),
    "B / alpha": (lambda o: o["B"] / 4, MB / 4, True),
    "-B": (lambda o: -o["B"], -MB, False),
    "B * negative": (lambda o: o["B"] * -1.0, -MB, False),
    "A * 0.5": (lambda o: o["A"] * 0.5, 0.5 * MA, False),
    "A + B": (lambda o: o["A"] + o["B"], MA + MB, False),
    "B + B": (lambda o: o["B"] + o["B"], 2 * MB, True),
    "B - B": (lambda o: o["B"] - o["B"], 0 * MB, False),
    "B + C (no blocks)": (lambda o: o["B"] + o["C"], MB + MC, True),
    "C + B (blocks from right)": (lambda o: o["C"] + o["B"], MB + MC, True),
    "B + I": (lambda o: o["B"] + o["I"], MB + EYE, True),
    "I + A": (lambda o: o["I"] + o["A"], MA + EYE, False),
    "B + diag": (lambda o: o["B"] + o["Dg"], MB + torch.diag(DIAG), True),
    "B - diag": (lambda o: o["B"] - o["Dg"], MB - torch.diag(DIAG), False),
    "nested": (lambda o: (o["B"] + 0.1) * 2 + o["I"] - 0.5 * o["C"], 2 * (MB + 0.1 * EYE) + EYE - 0.5 * MC, False),
    "nested psd": (lambda o: 3 * ((o["B"] + o["Dg"]) / 2 + 0.1), 3 * ((MB + torch.diag(DIAG)) / 2 + 0.1 * EYE), True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_dense(name):
    build, dense, psd = CASES[name]
    ops = _ops()
    op = build(ops)
    assert isinstance(op, CurvatureOperator) and isinstance(op, LinearOperatorLike)
    assert (op.dim, op.dtype, op.device) == (N, D64, torch.device("cpu"))
    assert op.is_psd is psd
    full = op.to_dense()
    assert torch.allclose(full, dense, atol=1e-12)
    assert torch.allclose(full, full.T, atol=1e-12)  # symmetric
    V = torch.randn(N, 3, generator=torch.Generator().manual_seed(0), dtype=D64)
    assert torch.allclose(op.matmat(V), dense @ V, atol=1e-12)
    assert torch.allclose(op.matvec(V[:, 0]), dense @ V[:, 0], atol=1e-12)
    assert np.allclose(op.to_scipy().matvec(V[:, 0].numpy()), (dense @ V[:, 0]).numpy(), atol=1e-12)
    assert op.blocks == BLOCKS  # every case has one operand with the two-block layout
    for blk in BLOCKS:  # (A + c I).block(b) == A.block(b) + c I, and so on
        sub = op.block(blk.name)
        assert sub.dim == blk.size
        assert torch.allclose(sub.to_dense(), dense[blk.slice, blk.slice], atol=1e-12)
        assert sub.is_psd is psd


def test_blocks_delegate_to_the_parents_own_block_views():
    ops = _ops()
    shifted = ops["B"] + 0.1
    sub = shifted.block("layer2")
    assert isinstance(sub, ShiftedOperator) and sub.c == 0.1
    assert type(sub.parent) is type(ops["B"].block("layer2"))
    summed = (ops["B"] + ops["Dg"]).block("layer1")
    assert isinstance(summed, SumOperator) and isinstance(summed.right, DiagonalOperator)
    assert torch.equal(summed.right.diag, DIAG[:4])
    assert isinstance((ops["B"] + ops["I"]).block("layer1").right, IdentityOperator)
    assert isinstance((2 * ops["B"]).block("layer1"), ScaledOperator)


def test_products_are_counted_in_the_composite_and_its_parents():
    ops = _ops()
    A, B = ops["A"], ops["B"]
    op = 2 * (A + B) + 0.5
    V = torch.ones(N, 4, dtype=D64)
    op.matmat(V)
    op.matvec(V[:, 0])
    assert op.num_matvecs == 5
    assert A.num_matvecs == B.num_matvecs == 5
    assert op.parent.num_matvecs == 5  # the inner 2 * (A + B)


class _Live(CurvatureOperator):
    """``s * I`` where ``s`` can change after the composite was built (like a model whose weights move)."""

    is_psd = True

    def __init__(self):
        super().__init__(N, D64, "cpu", blocks=BLOCKS)
        self.s = 1.0

    def _matmat(self, V):
        return self.s * V


def test_live_parents_stay_live():
    live = _Live()
    op = live + 0.5
    v = torch.ones(N, dtype=D64)
    assert torch.allclose(op @ v, 1.5 * v)
    live.s = 3.0
    assert torch.allclose(op @ v, 3.5 * v)
    assert torch.allclose(op.block("layer1") @ v[:4], 3.5 * v[:4])


def test_damped_ggn_of_a_network_keeps_layout_and_model_blocks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g, dtype=D64), torch.randint(0, 2, (8,), generator=g)
    G = GGNOperator(model, nn.CrossEntropyLoss(), (x, y))
    op = G + 0.1
    assert op.is_psd and op.param_shapes == G.param_shapes and op.blocks == G.blocks
    dense = G.to_dense()
    assert torch.allclose(op.to_dense(), dense + 0.1 * torch.eye(G.dim, dtype=D64), atol=1e-12)
    blk = G.blocks[0]
    sub = op.block(blk.name)
    assert type(sub.parent) is type(G.block(blk.name))  # the model's own (cheaper) block operator
    assert torch.allclose(sub.to_dense(), dense[blk.slice, blk.slice] + 0.1 * torch.eye(blk.size, dtype=D64),
                          atol=1e-12)
    shaped = [torch.ones(s, dtype=D64) for s in G.param_shapes]
    out = op @ shaped
    assert [t.shape for t in out] == list(G.param_shapes)
    assert not (G * -1).is_psd and (G * 2).is_psd


def test_identity_and_diagonal():
    eye = IdentityOperator(4, dtype=torch.float32)
    assert eye.is_psd and eye.dtype == torch.float32 and torch.equal(eye.to_dense(), torch.eye(4))
    d = DiagonalOperator(torch.tensor([1.0, -2.0], dtype=D64))
    assert not d.is_psd and torch.equal(d.matvec(torch.ones(2, dtype=D64)), torch.tensor([1.0, -2.0], dtype=D64))
    assert DiagonalOperator(torch.tensor([0.0, 2.0])).is_psd


def test_scalar_tensors_become_floats():
    B = _ops()["B"]
    c = torch.tensor(0.5, requires_grad=True)
    op = B + c
    assert type(op.c) is float and op.c == 0.5


ERRORS = [
    (lambda o: o["A"] + DenseOperator(torch.eye(3, dtype=D64)), ValueError, r"op1 \+ op2: the operators' dims differ"),
    (lambda o: o["A"] - DenseOperator(torch.eye(N)), ValueError, r"op1 - op2: the operators' dtypes differ"),
    (lambda o: o["A"] + IdentityOperator(N, dtype=D64, device="meta"), ValueError, r"the operators' devices differ"),
    (lambda o: o["A"] + DenseOperator(MB, blocks=(Block("x", 0, 3), Block("y", 3, 6))), ValueError,
     r"block layouts differ \(\['layer1', 'layer2'\] vs \['x', 'y'\]\)"),
    (lambda o: o["A"] + float("nan"), ValueError, r"c: expected a finite scalar, got nan"),
    (lambda o: o["A"] - float("inf"), ValueError, r"c: expected a finite scalar, got inf"),
    (lambda o: o["A"] * float("inf"), ValueError, r"alpha: expected a finite scalar"),
    (lambda o: o["A"].shifted(torch.tensor(float("nan"))), ValueError, r"c: expected a finite scalar"),
    (lambda o: o["A"] + True, TypeError, r"op \+ x: expected a real scalar or a CurvatureOperator, got bool"),
    (lambda o: o["A"] * True, TypeError, r"alpha: expected a real scalar .*got bool"),
    (lambda o: o["A"].shifted(np.bool_(True)), TypeError, r"c: expected a real scalar"),
    (lambda o: o["A"] + "0.1", TypeError, r"op \+ x: expected a real scalar or a CurvatureOperator, got str"),
    (lambda o: o["A"] * 1j, TypeError, r"alpha: expected a real scalar .*got complex"),
    (lambda o: o["A"] + torch.ones(N, dtype=D64), TypeError, r"got a tensor of shape \(6,\); for a diagonal"),
    (lambda o: o["A"] * torch.ones(2), TypeError, r"alpha: expected a real scalar, got a tensor of shape \(2,\)"),
    (lambda o: o["A"] * o["B"], TypeError, r"op1 \* op2: products of two operators are not supported"),
    (lambda o: o["A"] / 0, ValueError, r"alpha: cannot divide an operator by 0"),
    (lambda o: o["A"] / o["B"], TypeError, r"products of two operators are not supported"),
    (lambda o: IdentityOperator(0), ValueError, r"dim: expected a positive integer, got 0"),
    (lambda o: IdentityOperator(3, dtype=torch.int64), TypeError, r"dtype: expected a floating torch.dtype"),
    (lambda o: DiagonalOperator(torch.ones(2, 2)), ValueError, r"diag: expected a non-empty flat \(D,\) tensor"),
    (lambda o: DiagonalOperator([1.0]), ValueError, r"diag: expected a non-empty flat \(D,\) tensor, got list"),
    (lambda o: DiagonalOperator(torch.ones(3, dtype=torch.int64)), ValueError, r"diag: expected a floating dtype"),
    (lambda o: DiagonalOperator(torch.tensor([1.0, float("nan")])), ValueError, r"diag: expected finite entries"),
]


@pytest.mark.parametrize("build, exc, msg", ERRORS, ids=[f"err{i}" for i in range(len(ERRORS))])
def test_errors(build, exc, msg):
    with pytest.raises(exc, match=msg) as info:
        build(_ops())
    assert "\n" not in str(info.value)
