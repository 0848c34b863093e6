"""models.Augmented (ANODE) and models.SecondOrder (SONODE)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde import models as M

F64 = torch.float64


def _reflect(augmented: bool) -> float:
    """Train a NODE to map -1 -> 1 and 1 -> -1 (Dupont et al. 2019, g_1d)."""
    torch.manual_seed(0)
    d = 2 if augmented else 1
    net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, d))
    node = M.NeuralODE(M.Autonomous(net), solver=tn.RK4(), dt0=0.25)
    model = M.Augmented(node, 1, keep_augmented=False) if augmented else node
    x = torch.tensor([[-1.0], [1.0]])
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    for _ in range(80):
        loss = (model(x) + x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (model(x) + x).pow(2).mean().item()


def test_augmentation_solves_the_reflection_a_plain_node_cannot():
    # A 1-D flow preserves order, so phi(-1) <= phi(1) and the mean squared error of the
    # targets (1, -1) is at least 1 (attained at phi(-1) = phi(1) = 0). In 2-D a rotation by
    # pi maps x to -x.
    plain, augmented = _reflect(False), _reflect(True)
    assert plain > 1 - 1e-3
    assert augmented < 1e-2


def test_zero_and_learned_augmentation_shapes_and_slicing():
    x = torch.randn(4, 3, 5, 5)  # (batch, channels, H, W)
    conv = nn.Conv2d(5, 5, 3, padding=1)
    node = M.NeuralODE(M.Autonomous(conv), solver=tn.Euler(), dt0=0.5)
    aug = M.Augmented(node, 2)
    assert aug(x).shape == (4, 5, 5, 5)
    torch.testing.assert_close(aug.augment_input(x)[:, 3:], torch.zeros(4, 2, 5, 5))
    learned = M.Augmented(node, 2, nn.Conv2d(3, 2, 1), keep_augmented=False)
    assert learned(x).shape == (4, 3, 5, 5)
    assert learned(x, ts=[0.0, 0.5, 1.0]).shape == (3, 4, 3, 5, 5)
    out = learned(x).sum()
    out.backward()
    assert learned.augment.weight.grad is not None  # the augmentation is trained


def test_augmentation_errors():
    node = M.NeuralODE(M.Autonomous(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="augment_dim"):
        M.Augmented(node, 0)
    with pytest.raises(ValueError, match="'zero' or a module"):
        M.Augmented(node, 1, "learned")
    with pytest.raises(ValueError, match=r"must return shape \(2, 1\)"):
        M.Augmented(node, 1, nn.Linear(2, 2))(torch.randn(2, 2))


def test_second_order_harmonic_oscillator_matches_the_closed_form():
    class Spring(nn.Module):  # x'' = -x
        def forward(self, t, z):
            return -z[:, :2]

    x0 = torch.tensor([[1.0, -0.5], [0.2, 2.0]], dtype=F64)
    t1 = 2.0
    zero_v = M.Augmented(
        M.NeuralODE(M.SecondOrder(Spring()), t1=t1, rtol=1e-10, atol=1e-12), 2,
        keep_augmented=False,
    )  # fmt: skip
    torch.testing.assert_close(zero_v(x0), x0 * math.cos(t1))
    # learned initial velocity v0(x) = x (Norcliffe et al.): x(t) = x0 (cos t + sin t)
    v0 = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        v0.weight.copy_(torch.eye(2))
    sonode = M.Augmented(zero_v.node, 2, v0, keep_augmented=False)
    torch.testing.assert_close(sonode(x0), x0 * (math.cos(t1) + math.sin(t1)))
    (g,) = torch.autograd.grad(sonode(x0).sum(), v0.weight)
    assert torch.isfinite(g).all()


def test_second_order_needs_equal_halves():
    f = M.SecondOrder(lambda t, z: z[:, :1])
    with pytest.raises(ValueError, match="equal halves"):
        f(torch.tensor(0.0), torch.zeros(2, 3))


def test_learned_augmentation_state_dict_round_trip():
    def make():
        torch.manual_seed(3)
        net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
        return M.Augmented(M.NeuralODE(M.Autonomous(net)), 2, nn.Linear(2, 2))

    a, b = make(), make()
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.1)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 2)
    torch.testing.assert_close(b(x), a(x))
