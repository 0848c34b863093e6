"""Neural operators: spectral convolutions are dense circular convolutions on the kept modes,
FNOs are resolution-consistent, the Fourier layer works as a vector field through
``torchnde.solve`` with gradients, T1's initialisation preserves variance; the experiments
run at a tiny size."""

from __future__ import annotations

import json
import math

import pytest
import torch

import torchnde as tn
from torchnde.operators import T1, FNO1d, FNO2d, FourierField, SpectralConv1d, SpectralConv2d


def _circulant_apply(kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y_o[n] = sum_i sum_j kernel[i, o, j] x_i[(n - j) mod N], by explicit dense matrices."""
    c_in, c_out, n = kernel.shape
    idx = (torch.arange(n)[:, None] - torch.arange(n)[None, :]) % n  # (n, j) -> n - j
    y = torch.zeros(x.shape[0], c_out, n, dtype=x.dtype)
    for i in range(c_in):
        for o in range(c_out):
            mat = torch.zeros(n, n, dtype=x.dtype)  # mat[n, m] = kernel[(n - m) mod N]
            mat = kernel[i, o][idx]
            y[:, o] += x[:, i] @ mat.T
    return y


def test_spectral_conv1d_equals_the_dense_circular_convolution_with_its_band_limited_kernel():
    torch.manual_seed(0)
    n, modes = 24, 5
    layer = SpectralConv1d(2, 3, modes).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn_like(layer.weight))
    w = layer.complex_weight().detach()
    # The kernel with Fourier coefficients W_k (k < modes) and their conjugates, written out
    # as a real cosine/sine sum (no FFT): h[j] = (Re W_0 + 2 sum_k Re(W_k e^{2 pi i k j / n})) / n
    j = torch.arange(n, dtype=torch.float64)
    k = torch.arange(1, modes, dtype=torch.float64)
    phase = torch.exp(2j * math.pi * k[:, None] * j[None, :] / n)  # (k, j)
    kernel = (w[..., :1].real + 2 * (w[..., 1:, None] * phase).sum(-2).real) / n
    x = torch.randn(4, 2, n, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _circulant_apply(kernel, x), rtol=1e-12, atol=1e-12)


def test_spectral_conv2d_equals_the_dense_circular_convolution_on_both_signs_of_the_first_axis():
    torch.manual_seed(1)
    n1, n2, m1, m2 = 10, 8, 3, 3
    layer = SpectralConv2d(2, 2, m1, m2).double()
    with torch.no_grad():
        layer.weight1.copy_(torch.randn_like(layer.weight1))
        layer.weight2.copy_(torch.randn_like(layer.weight2))
    w1, w2 = (w.detach() for w in layer.complex_weights())
    # kernel h[p, q] = (1 / (n1 n2)) sum over kept (k1, k2) of c_{k2} Re(W e^{2 pi i (...)}),
    # c_0 = 1 and c_{k2 > 0} = 2 (the conjugate half of the last axis)
    p = torch.arange(n1, dtype=torch.float64)[:, None]
    q = torch.arange(n2, dtype=torch.float64)[None, :]
    h = torch.zeros(2, 2, n1, n2, dtype=torch.float64)
    for blocks, k1s in ((w1, range(m1)), (w2, range(-m1, 0))):
        for a, k1 in enumerate(k1s):
            for k2 in range(m2):
                e = torch.exp(2j * math.pi * (k1 * p / n1 + k2 * q / n2))
                c = 1.0 if k2 == 0 else 2.0
                h += c * (blocks[:, :, a, k2, None, None] * e).real
    h /= n1 * n2
    x = torch.randn(3, 2, n1, n2, dtype=torch.float64)
    # dense 2-D circular convolution
    y = torch.zeros(3, 2, n1, n2, dtype=torch.float64)
    for s1 in range(n1):
        for s2 in range(n2):
            shifted = torch.roll(x, shifts=(s1, s2), dims=(2, 3))
            y += torch.einsum("io,bixy->boxy", h[:, :, s1, s2], shifted)
    torch.testing.assert_close(layer(x), y, rtol=1e-12, atol=1e-12)


def _band_limited(n: int, batch: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    coef = torch.randn(batch, 4, 2, generator=gen, dtype=torch.float64)
    x = torch.arange(n, dtype=torch.float64) / n
    out = torch.zeros(batch, 1, n, dtype=torch.float64)
    for k in range(4):
        arg = 2 * math.pi * (k + 1) * x
        out[:, 0] += coef[:, k, :1] * torch.cos(arg) + coef[:, k, 1:] * torch.sin(arg)
    return out


def test_spectral_conv_is_exact_across_resolutions_for_band_limited_input():
    torch.manual_seed(2)
    layer = SpectralConv1d(1, 1, 6).double()
    coarse, fine = layer(_band_limited(32)), layer(_band_limited(128))
    torch.testing.assert_close(coarse, fine[..., ::4], rtol=1e-12, atol=1e-12)


def test_fno1d_at_two_resolutions_agrees_on_shared_points_within_the_truncation_error():
    # The pointwise nonlinearities make harmonics above the grid's Nyquist mode, so a coarse
    # grid aliases them: the disagreement with a fine evaluation is the truncation error,
    # small and shrinking as the coarse grid is refined.
    torch.manual_seed(3)
    model = FNO1d(1, 1, modes=6, width=8, layers=3).double()
    torch.set_grad_enabled(False)
    ref = model(_band_limited(1024))
    errs = []
    for n in (32, 64, 128):
        out = model(_band_limited(n))
        errs.append(float((out - ref[..., :: 1024 // n]).abs().max() / ref.abs().max()))
    torch.set_grad_enabled(True)
    assert errs[-1] < 1e-2, errs
    assert errs[0] > errs[1] > errs[2], errs


def test_fno2d_and_t1_map_any_resolution_to_the_same_shape_and_reject_bad_input():
    fno = FNO2d(1, 2, modes=(3, 4), width=4, layers=2, padding=2)
    t1 = T1(1, 2, modes=4, width=4, layers=2, resolution=12)
    for n1, n2 in ((12, 12), (16, 20)):
        x = torch.randn(2, 1, n1, n2)
        assert fno(x).shape == (2, 2, n1, n2) and t1(x).shape == (2, 2, n1, n2)
    with pytest.raises(ValueError, match=r"FNO2d: `x` must have shape \(batch, 1, n1, n2\)"):
        fno(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="it needs at least 6 x 8 points"):
        fno(torch.randn(1, 1, 4, 4))
    with pytest.raises(TypeError, match="must be a floating tensor, got dtype torch.int64"):
        fno(torch.ones(1, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="FNO1d: `modes` must be an int >= 1, got 0"):
        FNO1d(modes=0)
    with pytest.raises(ValueError, match="`grid` must be one of"):
        FNO1d(grid="square")
    with pytest.raises(ValueError, match="T1: `init` must be"):
        T1(resolution=16, init="xavier")


def test_fourier_field_through_solve_matches_finite_difference_gradients():
    torch.manual_seed(4)
    field = FourierField(2, modes=3, time=True, out_scale=0.5).double()
    u0 = torch.randn(1, 2, 6, dtype=torch.float64, requires_grad=True)

    def solve(u0: torch.Tensor) -> torch.Tensor:
        sol = tn.solve(
            tn.ODETerm(field),
            tn.Dopri5(),
            0.0,
            0.5,
            u0,
            controller=tn.PIDController(rtol=1e-10, atol=1e-10),
        )
        return sol.ys[-1]

    out = solve(u0)
    assert out.shape == u0.shape
    torch.autograd.gradcheck(solve, (u0,), atol=1e-6, rtol=1e-5)
    # and gradients reach the parameters
    solve(u0).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters())


@pytest.mark.parametrize("adjoint", [tn.BacksolveAdjoint(), tn.CheckpointAdjoint()])
def test_fourier_field_parameter_gradients_agree_across_adjoints(adjoint):
    # the complex spectral weights are real parameters, so every adjoint handles them
    torch.manual_seed(6)
    field = FourierField(2, modes=3).double()
    u0 = torch.randn(2, 2, 8, dtype=torch.float64)
    params = list(field.parameters())
    assert all(not p.is_complex() for p in params)

    def grads(adj):
        sol = tn.solve(tn.ODETerm(field), tn.Dopri5(), 0.0, 0.5, u0, adjoint=adj,
                       controller=tn.PIDController(rtol=1e-10, atol=1e-10))  # fmt: skip
        return torch.autograd.grad(sol.ys[-1].sin().sum(), params)

    for g, ref in zip(grads(adjoint), grads(tn.DirectAdjoint())):
        torch.testing.assert_close(g, ref, rtol=1e-6, atol=1e-8)


def test_fourier_field_2d_is_a_vector_field_of_the_state_shape():
    field = FourierField(3, modes=(2, 2), ndim=2)
    u = torch.randn(2, 3, 8, 8)
    assert field(torch.tensor(0.0), u).shape == u.shape
    with pytest.raises(ValueError, match=r"FourierField: `u` must have shape \(batch, 3, n1, n2\)"):
        field(torch.tensor(0.0), torch.randn(2, 3, 8))


@pytest.mark.parametrize("ndim, n, m", [(1, 256, 16), (2, 32, 8)])
def test_t1_variance_preserving_init_keeps_the_output_variance_of_a_linear_layer(ndim, n, m):
    # A linear T1 (lift then project, no hidden nonlinearity) on white noise: the output's
    # variance equals the input's with the paper's initialisation and collapses by m/n (kept
    # over total coefficients) without it. Each draw of weights gives one ratio; the
    # tolerance is 4 standard errors of their mean.
    shape = (64, 2, *((n,) * ndim))
    ratios = {"variance-preserving": [], "standard": []}
    for seed in range(40):
        torch.manual_seed(seed)
        x = torch.randn(shape, dtype=torch.float64)
        for init in ratios:
            torch.manual_seed(1000 + seed)
            model = T1(2, 2, m, 8, layers=1, resolution=n, ndim=ndim, grid="none", init=init)
            with torch.no_grad():
                y = model.double()(x)
            ratios[init].append(float(y.var() / x.var()))
    total, kept = n**ndim, m**ndim
    for init, expected in (("variance-preserving", 1.0), ("standard", kept / total)):
        r = torch.tensor(ratios[init])
        se = float(r.std() / math.sqrt(len(r)))
        assert abs(float(r.mean()) - expected) < 4 * se + 1e-3 * expected, (init, r.mean(), se)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, overrides, keys",
    [
        (
            "burgers",
            [
                "n_train=8",
                "n_test=4",
                "epochs=1",
                "width=4",
                "modes=4",
                "batch_size=4",
                "gen_resolution=256",
                "resolution=64",
                "super_resolution=128",
            ],  # fmt: skip
            ["test_rel_l2", "test_rel_l2_1024"],
        ),
        (
            "darcy",
            [
                "n_train=8",
                "n_test=4",
                "epochs=1",
                "width=4",
                "modes=3",
                "resolution=12",
                "padding=2",
                "batch_size=4",
            ],  # fmt: skip
            ["test_rel_l2", "t1_test_rel_l2", "fno_s_per_epoch", "t1_s_per_epoch"],
        ),
    ],
)
def test_operator_experiments_run_a_tiny_config_and_write_their_keys(
    name, overrides, keys, tmp_path
):
    from torchnde.cli import main

    out = tmp_path / name
    assert main(["run", name, "--out", str(out), "--quiet", *overrides]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in keys:
        assert math.isfinite(metrics["eval"][key]), key
    assert all(h["verdict"].split(" ")[0].rstrip(":") in ("yes", "partly", "no")
               for h in metrics["headline"])  # fmt: skip
    assert (out / f"{name}.png").is_file() and (out / "report.md").is_file()
    assert list((out / "data").glob(f"{name}-*.pt")), "the data are cached under the run folder"
