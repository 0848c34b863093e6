"""The irregular-time-series models of the zoo built on the CDE engine and GRUs: NeuralCDE
(heads, read-outs, causal interpolations, streaming), NeuralRDE, GRUD and GRUODEBayes."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as tn
from torchnde.models import GRUD, GRUODEBayes, NeuralCDE, NeuralRDE
from torchnde.models.grud import time_since_observed

INTERPOLATIONS = ("cubic", "hermite", "linear", "rectilinear")


def _series(batch=3, length=8, channels=2, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, channels, generator=gen, dtype=dtype)
    t = torch.linspace(0, 1, length, dtype=dtype)
    return x, t


# ------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_neural_cde_outputs_one_value_per_series_or_per_time(interpolation):
    x, t = _series()
    x[0, 5:] = float("nan")  # a shorter series
    x[1, 2, 1] = float("nan")  # a missing value
    for readout, shape in (("final", (3, 4)), ("all", (3, 8, 4))):
        torch.manual_seed(0)
        model = NeuralCDE(2, 5, 4, interpolation=interpolation, readout=readout, width=8)
        out = model(model.interpolate(x, t), t)
        assert out.shape == shape and bool(torch.isfinite(out).all())
        assert model.nfe > 0


def test_the_readout_at_the_last_time_is_the_final_readout():
    x, t = _series()
    torch.manual_seed(0)
    every = NeuralCDE(2, 5, 4, readout="all", width=8)
    final = NeuralCDE(2, 5, 4, readout="final", width=8)
    final.load_state_dict(every.state_dict())
    c = every.interpolate(x, t)
    torch.testing.assert_close(every(c, t)[:, -1], final(c, t), atol=1e-6, rtol=1e-6)


def test_forecaster_and_rde_shapes():
    x, t = _series(length=20)
    f = NeuralCDE(2, 5, 2, head="forecaster", width=8)
    t_future = torch.tensor([1.0, 1.25, 1.5])
    assert f(f.interpolate(x, t), t, t_future).shape == (3, 3, 2)
    rde = NeuralRDE(2, 5, 3, depth=2, window_length=0.25, readout="all", width=8)
    coeffs = rde.interpolate(x, t)
    # 3 path channels (time, x, y): depth 2 has 3 + 3 log-signature channels, 4 windows.
    assert rde.path_channels == 6 and coeffs.shape == (3, 5, 6)
    assert rde(coeffs).shape == (3, 5, 3)


def test_grud_and_gru_ode_bayes_shapes():
    x, t = _series(length=6, channels=3)
    mask = (torch.rand(3, 6, 3, generator=torch.Generator().manual_seed(1)) < 0.6).float()
    h, hs = GRUD(3, 7)(t, x, mask)
    assert h.shape == (3, 7) and hs.shape == (3, 6, 7)
    model = GRUODEBayes(3, 7)
    h, hs = model(t, x, mask)
    assert h.shape == (3, 7) and hs.shape == (3, 6, 7)
    assert model.nll.shape == (3,) and torch.equal(model.num_observed, mask.sum((1, 2)))
    mean, var = model.forecast(h, t[-1], torch.tensor([1.2, 1.5]))
    assert mean.shape == var.shape == (3, 2, 3) and bool((var > 0).all())


# ------------------------------------------------------------------------------ masks, causality


def test_grud_and_gru_ode_bayes_never_read_masked_values():
    x, t = _series(length=6, channels=3)
    mask = (torch.rand(3, 6, 3, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    other = torch.where(mask > 0, x, torch.full_like(x, float("nan")))
    for model in (GRUD(3, 4), GRUODEBayes(3, 4)):
        torch.testing.assert_close(model(t, x, mask)[1], model(t, other, mask)[1])


def test_grud_holds_the_state_after_a_series_ends():
    x, t = _series(length=6, channels=2)
    model = GRUD(2, 4)
    lengths = torch.tensor([3, 6, 4])
    h, hs = model(t, x, lengths=lengths)
    torch.testing.assert_close(h, hs[torch.arange(3), lengths - 1])
    alone, _ = model(t[:3], x[:1, :3])
    torch.testing.assert_close(h[0], alone[0])


def test_time_since_observed_follows_che_et_al():
    ts = torch.tensor([[0.0, 1.0, 3.0, 4.0]])
    mask = torch.tensor([[[1.0], [0.0], [0.0], [1.0]]])
    assert time_since_observed(ts, mask)[0, :, 0].tolist() == [0.0, 1.0, 3.0, 4.0]
    mask = torch.ones(1, 4, 1)
    assert time_since_observed(ts, mask)[0, :, 0].tolist() == [0.0, 1.0, 2.0, 1.0]


@pytest.mark.parametrize("interpolation", ["hermite", "rectilinear"])
def test_causal_interpolations_predict_from_the_past_only(interpolation):
    """Online prediction (Morrill et al. 2021): the output at observation i does not change
    when the observations after i change."""
    x, t = _series(length=8)
    torch.manual_seed(0)
    model = NeuralCDE(2, 5, 3, interpolation=interpolation, readout="all", width=8)
    future = x.clone()
    future[:, 5:] = torch.randn(3, 3, 2)
    out, out_f = (model(model.interpolate(v, t), t) for v in (x, future))
    torch.testing.assert_close(out[:, :5], out_f[:, :5], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out[:, 6:], out_f[:, 6:])


def test_the_natural_cubic_spline_is_not_causal():
    x, t = _series(length=8)
    model = NeuralCDE(2, 5, 3, interpolation="cubic", readout="all", width=8)
    future = x.clone()
    future[:, 6:] += 1.0
    out, out_f = (model(model.interpolate(v, t), t) for v in (x, future))
    assert not torch.allclose(out[:, 2:5], out_f[:, 2:5], atol=1e-6)


@pytest.mark.parametrize("interpolation", ["hermite", "linear"])
def test_the_stream_gives_the_readout_at_every_time(interpolation):
    x, t = _series(length=7)
    torch.manual_seed(0)
    model = NeuralCDE(2, 5, 3, interpolation=interpolation, readout="all", width=8)
    offline = model(model.interpolate(x, t), t)
    stream = model.stream(t[0], x[:, 0])
    online = [model.readout(stream.z)]
    for i in range(1, 7):
        online.append(model.readout(stream.update(t[i], model.stream_input(t[i], x[:, i]))))
    torch.testing.assert_close(torch.stack(online, 1), offline, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ batch independence


def test_a_samples_output_does_not_depend_on_the_rest_of_the_batch():
    x, t = _series(batch=4, length=6, channels=2)
    x[2, 4:] = float("nan")
    mask = (torch.rand(4, 6, 2, generator=torch.Generator().manual_seed(3)) < 0.7).float()
    ts = torch.sort(torch.rand(4, 6, generator=torch.Generator().manual_seed(4)), dim=1).values
    torch.manual_seed(0)
    cde = NeuralCDE(2, 4, 3, width=8)
    rde = NeuralRDE(2, 4, 3, window_length=0.4, width=8)
    grud, bayes = GRUD(2, 4), GRUODEBayes(2, 4)
    for model in (cde, rde):
        full = model(model.interpolate(x, t), t)
        part = model(model.interpolate(x[1:3], t), t)
        torch.testing.assert_close(full[1:3], part, atol=1e-6, rtol=1e-6)
    full = grud(t, torch.nan_to_num(x), mask)[0]
    torch.testing.assert_close(full[1:3], grud(t, torch.nan_to_num(x[1:3]), mask[1:3])[0])
    full = bayes(ts, torch.nan_to_num(x), mask)[0]
    part = bayes(ts[1:3], torch.nan_to_num(x[1:3]), mask[1:3])[0]
    torch.testing.assert_close(full[1:3], part, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------ gradients


def test_gradients_match_float64_finite_differences():
    torch.manual_seed(0)
    x, t = _series(batch=2, length=5, channels=2, dtype=torch.float64)
    x.requires_grad_(True)
    cde = NeuralCDE(2, 3, 2, width=4, depth=1).double()
    rde = NeuralRDE(2, 3, 2, window_length=0.5, width=4, field_depth=1).double()
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]).double()
    mask = mask.expand(2, 5, 2)
    grud, bayes = GRUD(2, 3).double(), GRUODEBayes(2, 3, width=4, prep_size=2).double()
    checks = {
        "cde": lambda v: cde(cde.interpolate(v, t), t),
        "rde": lambda v: rde(rde.interpolate(v, t)),
        "grud": lambda v: grud(t, v, mask)[0],
        "bayes": lambda v: bayes(t, v, mask)[0] + bayes.nll[:, None],
    }
    for name, f in checks.items():
        assert torch.autograd.gradcheck(f, (x,), fast_mode=True), name
    # and through a parameter of the vector field
    w = cde.func.net[0].weight

    def of_weight(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            w.copy_(v)
        return cde(cde.interpolate(x.detach(), t), t)

    grad = torch.autograd.grad(of_weight(w.detach().clone()).sum(), w)[0]
    eps, i, j = 1e-6, 1, 0
    base = w.detach().clone()
    up, down = base.clone(), base.clone()
    up[i, j] += eps
    down[i, j] -= eps
    with torch.no_grad():
        fd = (of_weight(up).sum() - of_weight(down).sum()) / (2 * eps)
    assert math.isclose(float(grad[i, j]), float(fd), rel_tol=1e-6, abs_tol=1e-9)


# ------------------------------------------------------------------------------ fits


def _spirals(n=32, length=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 2 * math.pi, length)
    phase = torch.rand(n, 1, generator=gen) * 2 * math.pi
    sign = torch.where(torch.arange(n) < n // 2, 1.0, -1.0)[:, None]
    x = torch.stack([torch.cos(phase + t), sign * torch.sin(phase + t)], -1)
    return x + 0.05 * torch.randn(x.shape, generator=gen), t, (sign[:, 0] > 0).long()


def _fit(model, forward, y, steps, lr=0.05):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(forward(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float((forward().argmax(-1) == y).float().mean())


def test_each_classifier_learns_the_direction_of_a_spiral():
    """Clockwise or anticlockwise, with a third of the points dropped: 100% training accuracy
    after 20-30 Adam steps (chance: 50%)."""
    x, t, y = _spirals(length=10)
    x[:, ::3] = float("nan")
    torch.manual_seed(0)
    cde = NeuralCDE(2, 8, 2, width=16, interpolation="hermite")
    c = cde.interpolate(x, t)
    assert _fit(cde, lambda: cde(c, t), y, 20) == 1.0
    torch.manual_seed(0)
    rde = NeuralRDE(2, 8, 2, window_length=1.0, width=16)
    r = rde.interpolate(x, t)
    assert _fit(rde, lambda: rde(r), y, 20) == 1.0
    torch.manual_seed(0)
    grud, head = GRUD(2, 8), torch.nn.Linear(8, 2)
    both = torch.nn.ModuleList([grud, head])
    mask = (~torch.isnan(x)).float()
    assert _fit(both, lambda: head(grud(t, torch.nan_to_num(x), mask)[0]), y, 30) == 1.0


def test_gru_ode_bayes_learns_to_predict_a_sine():
    gen = torch.Generator().manual_seed(0)
    ts = torch.linspace(0, 6, 13)
    phase = torch.rand(16, 1, generator=gen) * 2 * math.pi
    x = torch.sin(ts + phase).unsqueeze(-1)
    mask = (torch.rand(16, 13, 1, generator=gen) < 0.7).float()
    torch.manual_seed(0)
    model = GRUODEBayes(1, 12, width=16, num_steps=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model(ts, x, mask)
    first = float(model.loss().detach())
    for _ in range(25):
        model(ts, x, mask)
        loss = model.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        model(ts, x, mask)
    # the per-observation Gaussian NLL falls by more than 0.5 nats (measured: 1.24 -> 0.25)
    assert float(model.loss()) < first - 0.5, (first, float(model.loss()))


# ------------------------------------------------------------------------------ errors


def test_documented_errors():
    x, t = _series()
    with pytest.raises(ValueError, match="`head` must be one of"):
        NeuralCDE(2, 4, 2, head="ranker")
    with pytest.raises(ValueError, match="`interpolation` must be one of"):
        NeuralCDE(2, 4, 2, interpolation="quintic")
    with pytest.raises(ValueError, match="a forecaster reads out at `t_future`"):
        NeuralCDE(2, 4, 2, head="forecaster", readout="all")
    with pytest.raises(ValueError, match="rectilinear paths need time as a channel"):
        NeuralCDE(2, 4, 2, interpolation="rectilinear", time_channel=False)
    with pytest.raises(ValueError, match="unknown method 'rk5'"):
        NeuralCDE(2, 4, 2, solver="rk5")
    with pytest.raises(NotImplementedError, match="BacksolveAdjoint needs a continuously diff"):
        NeuralCDE(2, 4, 2, interpolation="linear", adjoint=tn.BacksolveAdjoint())
    model = NeuralCDE(2, 4, 2)
    with pytest.raises(ValueError, match="`x` has 3 channels"):
        model.interpolate(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="`coeffs` must be the output of model.interpolate"):
        model(torch.randn(3, 7, 5), t)
    with pytest.raises(ValueError, match="`t_future` is for head='forecaster' only"):
        model(model.interpolate(x, t), t, torch.tensor([2.0]))
    f = NeuralCDE(2, 4, 2, head="forecaster")
    with pytest.raises(ValueError, match="must increase from at or after the last observation"):
        f(f.interpolate(x, t), t, torch.tensor([0.5, 2.0]))
    with pytest.raises(NotImplementedError, match="readout at every time needs one time grid"):
        m = NeuralCDE(2, 4, 2, readout="all")
        ts = t.expand(3, 8) + torch.arange(3.0)[:, None] * 0.01
        m(m.interpolate(x, ts), ts)
    with pytest.raises(NotImplementedError, match="stream\\(\\) needs interpolation"):
        NeuralCDE(2, 4, 2).stream(0.0, x[:, 0])
    with pytest.raises(ValueError, match="head='forecaster' is not supported"):
        NeuralRDE(2, 4, 2, head="forecaster")
    with pytest.raises(ValueError, match="`window_length` must be a positive number"):
        NeuralRDE(2, 4, 2, window_length=0)
    with pytest.raises(ValueError, match="`x_mean` must be a tensor of shape \\(2,\\)"):
        GRUD(2, 4, x_mean=torch.zeros(3))
    with pytest.raises(ValueError, match="`lengths` must be \\(3,\\) ints in \\[1, 8\\]"):
        GRUD(2, 4)(t, x, lengths=torch.tensor([0, 8, 8]))
    with pytest.raises(ValueError, match="`ts` must increase along time"):
        GRUD(2, 4)(t.flip(0), x)
    with pytest.raises(TypeError, match="`solver` must be a torchnde solver"):
        GRUODEBayes(2, 4, solver="rk4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`t_future` must be non-decreasing and not before"):
        model_b = GRUODEBayes(2, 4)
        model_b.forecast(torch.zeros(3, 4), 1.0, torch.tensor([0.5]))


def test_losses_of_the_heads():
    model = NeuralCDE(2, 4, 3)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert math.isclose(float(model.loss(logits, y)), float(ce.mean()), rel_tol=1e-6)
    assert math.isclose(float(model.loss(logits, y, torch.tensor([1, 0]))), float(ce[0]))
    reg = NeuralCDE(2, 4, 1, head="regressor")
    out, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, float("nan"), 5.0])
    assert float(reg.loss(out, target)) == 2.0  # (0 + 4) / 2: the NaN target is left out


def test_solves_run_on_the_public_engine_with_any_adjoint():
    x, t = _series()
    torch.manual_seed(0)
    a = NeuralCDE(2, 4, 2, width=8, solver=tn.RK4())
    b = NeuralCDE(2, 4, 2, width=8, solver=tn.RK4(), adjoint=tn.CheckpointAdjoint())
    b.load_state_dict(a.state_dict())
    c = a.interpolate(x, t)
    ga = torch.autograd.grad(a(c, t).sum(), list(a.parameters()))
    gb = torch.autograd.grad(b(c, t).sum(), list(b.parameters()))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)


def test_adaptive_direct_gradients_agree_with_the_continuous_adjoint():
    """With adaptive steps the default ``differentiate_steps=False`` gives the gradient of the
    solve on its mesh, which agrees with the backsolve adjoint to the tolerance."""
    x, t, y = _spirals(n=4, length=12)
    x, t = x.double(), t.double()
    grads = []
    for adjoint in (None, tn.BacksolveAdjoint()):
        torch.manual_seed(0)
        model = NeuralCDE(2, 4, 2, width=8, interpolation="hermite", solver="dopri5", rtol=1e-8)
        model = model.double()
        model.atol, model.adjoint = 1e-10, adjoint
        loss = model.loss(model(model.interpolate(x, t), t), y)
        grads.append(
            torch.cat([g.flatten() for g in torch.autograd.grad(loss, model.parameters())])
        )
    err = float((grads[0] - grads[1]).norm() / grads[1].norm())
    assert err < 1e-4, err
