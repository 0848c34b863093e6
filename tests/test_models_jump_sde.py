"""NeuralJumpSDE: the point-process log-likelihood against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde.models import NeuralJumpSDE

F64 = torch.float64
NAN = float("nan")


class Clock(nn.Module):
    """dz/dt = 1: the latent state is the time (z0 = 0)."""

    def forward(self, z):
        return torch.ones_like(z)


class Zero(nn.Module):
    def forward(self, z):
        return torch.zeros_like(z)


class Linear(nn.Module):
    """lambda = a + b z[..., 0]: with z = t, the intensity a + b t."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, z):
        return self.a + self.b * z[..., 0]


def test_the_loglik_of_a_poisson_process_with_known_intensity_is_the_closed_form():
    """lambda(t) = a + b t: log L = sum log(a + b t_i) - (a T + b T^2 / 2); RK4 integrates the
    quadratic compensator exactly, so only rounding separates the two."""
    a, b, T = 0.7, 0.3, 4.0
    model = NeuralJumpSDE(1, drift=Clock(), jump=Zero(), intensity=Linear(a, b)).double()
    times = torch.tensor([[0.2, 1.1, 2.5, 3.9], [0.5, 3.0, NAN, NAN], [NAN] * 4], dtype=F64)
    got = model(times, T)
    expect = []
    for row in times:
        ev = row[~torch.isnan(row)]
        expect.append(float(torch.log(a + b * ev).sum()) - (a * T + b * T * T / 2))
    torch.testing.assert_close(got, torch.tensor(expect, dtype=F64), rtol=0, atol=1e-12)


def test_a_constant_intensity_gives_n_log_lambda_minus_lambda_t():
    lam, T = 2.5, 3.0
    model = NeuralJumpSDE(2, drift=Zero(), jump=Zero(), intensity=Linear(lam, 0.0)).double()
    times = torch.tensor([[0.1, 0.4, 2.9]], dtype=F64)
    got = model(times, torch.tensor([T], dtype=F64))
    torch.testing.assert_close(got, torch.tensor([3 * math.log(lam) - lam * T], dtype=F64),
                               rtol=0, atol=1e-12)  # fmt: skip


def test_the_loglik_is_differentiable_and_training_raises_it():
    torch.manual_seed(0)
    model = NeuralJumpSDE(4, hidden=8, step_size=0.25).double()
    times = torch.tensor([[0.3, 0.5, 0.6, 2.0], [1.0, 1.1, NAN, NAN]], dtype=F64)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    with torch.no_grad():
        first = float(model(times, 3.0).sum())
    for _ in range(15):
        opt.zero_grad()
        loss = -model(times, 3.0).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(model(times, 3.0).sum()) > first + 0.1
    lam = model.intensity_at(times[0], torch.tensor([0.1, 0.55, 2.5], dtype=F64))
    assert lam.shape == (3,) and bool((lam > 0).all())


def test_the_model_is_a_state_dict_round_trip():
    a, b = NeuralJumpSDE(3).double(), NeuralJumpSDE(3).double()
    b.load_state_dict(a.state_dict())
    times = torch.tensor([[0.5, 1.0]], dtype=F64)
    assert torch.equal(a(times, 2.0), b(times, 2.0))


@pytest.mark.parametrize(
    ("times", "t_end", "err", "match"),
    [
        (torch.tensor([0.5, 1.0]), 2.0, ValueError, r"shape \(batch, max_events\)"),
        (torch.tensor([[1.0, 0.5]]), 2.0, ValueError, r"non-decreasing"),
        (torch.tensor([[0.5, 3.0]]), 2.0, ValueError, r"lie in \[t_start, t_end\]"),
        (torch.tensor([[NAN, 0.5]]), 2.0, ValueError, r"NaN-padded only after"),
        ([[0.5]], 2.0, TypeError, r"floating-point tensor"),
        (torch.tensor([[0.5]]), torch.ones(3), ValueError, r"`t_end` must be a number or shape"),
    ],
)
def test_bad_event_times_are_refused(times, t_end, err, match):
    with pytest.raises(err, match=match):
        NeuralJumpSDE(2)(times, t_end)


def test_bad_model_arguments_are_refused():
    with pytest.raises(ValueError, match=r"`latent_dim` must be an int >= 1, got 0"):
        NeuralJumpSDE(0)
    with pytest.raises(ValueError, match=r"`step_size` must be a positive number"):
        NeuralJumpSDE(2, step_size=-1.0)


def test_tn_exports():
    assert tn.models.NeuralJumpSDE is NeuralJumpSDE
