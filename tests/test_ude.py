"""torchnde.discovery.UniversalODE: known terms + a network, trained through the solver."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchnde
from torchnde.discovery import STLSQ, UniversalODE

D = torch.float64


def known(t, y, args=None):
    return torch.stack([1.3 * y[..., 0], -1.8 * y[..., 1]], -1)


class Interaction(nn.Module):
    """c * (-x y, x y): the missing Lotka-Volterra terms when c = (0.9, 0.8)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor([0.9, 0.8], dtype=D))

    def forward(self, y):
        xy = y[..., 0] * y[..., 1]
        return torch.stack([-self.c[0] * xy, self.c[1] * xy], -1)


def lv(t, y, args=None):
    x, v = y[..., 0], y[..., 1]
    return torch.stack([1.3 * x - 0.9 * x * v, 0.8 * x * v - 1.8 * v], -1)


def _solve(f, ts, y0):
    return torchnde.solve(
        torchnde.ODETerm(f),
        torchnde.Dopri5(),
        float(ts[0]),
        float(ts[-1]),
        y0,
        saveat=torchnde.SaveAt(ts=ts),
        controller=torchnde.PIDController(rtol=1e-10, atol=1e-12),
    ).ys


def test_universal_ode_is_known_plus_network_and_discovers_the_missing_terms():
    ude = UniversalODE(known, Interaction())
    y = torch.tensor([[0.5, 2.0], [1.0, 3.0]], dtype=D)
    torch.testing.assert_close(ude(0.0, y), lv(0.0, y))
    ts = torch.linspace(0, 3, 100, dtype=D)
    states = _solve(ude, ts, torch.tensor([0.44249296, 4.6280594], dtype=D))
    sindy = ude.discover(
        states, optimizer=STLSQ(threshold=0.1, alpha=0.0), feature_names=["x", "y"]
    )
    assert sindy.equations(3) == ["-0.900 x y", "0.800 x y"]
    field = ude.recovered(sindy)
    torch.testing.assert_close(field(0.0, y), lv(0.0, y))
    torch.testing.assert_close(field(0.0, y[0]), lv(0.0, y[0]))


def test_gradient_through_the_solver_matches_finite_differences():
    ts = torch.linspace(0, 1, 5, dtype=D)
    y0 = torch.tensor([0.44249296, 4.6280594], dtype=D)

    def loss(c):
        net = Interaction()
        with torch.no_grad():
            net.c.copy_(c)
        ude = UniversalODE(known, net)
        ys = _solve(ude, ts, y0)
        return ys.sum(), ude

    c = torch.tensor([0.7, 0.6], dtype=D)
    value, ude = loss(c)
    value.backward()
    grad = ude.network.c.grad
    h = 1e-6
    for i in range(2):
        e = torch.zeros(2, dtype=D)
        e[i] = h
        fd = ((loss(c + e)[0] - loss(c - e)[0]) / (2 * h)).item()
        assert abs(grad[i].item() - fd) < 1e-5 * max(1.0, abs(fd))


def test_zero_init_starts_from_the_known_terms():
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    ude = UniversalODE(known, net, zero_init=True)
    y = torch.rand(4, 2, dtype=D)
    torch.testing.assert_close(ude(0.0, y), known(0.0, y))


def test_universal_ode_bad_inputs():
    with pytest.raises(TypeError, match="`known` must be a callable"):
        UniversalODE(3.0, Interaction())
    with pytest.raises(TypeError, match="`network` must be a torch.nn.Module, got function"):
        UniversalODE(known, lambda y: y)
    with pytest.raises(ValueError, match="`zero_init=True` needs an nn.Linear"):
        UniversalODE(known, Interaction(), zero_init=True)


def test_the_threshold_sweep_keeps_the_sparsest_fit_within_the_tolerance():
    from torchnde.experiments.lotka_volterra_ude import ParetoSTLSQ

    g = torch.Generator().manual_seed(0)
    theta = torch.randn(200, 4, generator=g, dtype=D)
    # target 0: two terms and a small third (2% of the signal); target 1: nothing fits
    y = torch.stack(
        [2.0 * theta[:, 0] - 1.0 * theta[:, 2] + 0.05 * theta[:, 3],
         torch.randn(200, generator=g, dtype=D)], -1)  # fmt: skip
    xi = ParetoSTLSQ(torch.logspace(-3, 1, 41, dtype=D), tol=0.05).fit(theta, y)
    assert (xi[0] != 0).tolist() == [True, False, True, False]
    torch.testing.assert_close(xi[0, [0, 2]], torch.tensor([2.0, -1.0], dtype=D), atol=0.02, rtol=0)
    # none within the tolerance: the smallest residual (the full fit)
    assert bool((xi[1] != 0).all())


@pytest.mark.slow  # ~4 s CPU: a tiny lotka-volterra-ude run through the harness
def test_the_lbfgs_phase_of_the_experiment_lowers_both_losses(tmp_path):
    from torchnde.experiments import harness, make_config
    from torchnde.experiments.lotka_volterra_ude import Config

    cfg = make_config(
        Config,
        {"out": tmp_path / "lv", "quiet": True, "plot": False, "epochs": 3, "hidden": 4,
         "t_train": 2.0, "dt": 0.5, "t_extrapolate": 3.0, "lbfgs_iters": 5},
    )  # fmt: skip
    refine = harness.run("lotka-volterra-ude", cfg)["train"]["refine"]
    for key in ("ude", "node"):
        assert refine[f"loss_after_lbfgs_{key}"] < refine[f"loss_before_lbfgs_{key}"], refine


def test_lotka_volterra_ude_multi_start_keeps_the_lowest_training_loss():
    from torchnde.experiments.lotka_volterra_ude import Config, Task

    cfg = Config(hidden=4, t_train=2.0, dt=0.5, lbfgs_iters=2, starts=3, start_iters=2)
    task = Task(cfg, torch.device("cpu"))
    model = task.setup()
    out = task.refine(model)
    losses = out["start_losses_ude"]
    assert len(losses) == 3 and out["start_kept_ude"] == losses.index(min(losses))
    # the kept start is refined further: never worse than the best start
    assert out["loss_after_lbfgs_ude"] <= min(losses) + 1e-12
    assert "start_losses_node" not in out  # the NODE baseline: Adam + L-BFGS as before
    with pytest.raises(ValueError, match="starts"):
        Config(starts=0)
