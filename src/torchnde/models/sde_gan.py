r"""Neural SDEs as GANs: an SDE generator and a neural CDE discriminator (Kidger et al. 2021).

The generator is a neural SDE in a hidden space, started from a network of initial noise
and read out linearly:

$$ x_0 = \zeta_\theta(V), \qquad dx = \mu_\theta(t, x)\,dt + \sigma_\theta(t, x) \circ dW,
   \qquad Y_t = \ell_\theta(x_t), $$

with $V \sim \mathcal N(0, I)$, $W$ a Brownian motion of ``noise_size`` channels (general
noise, Stratonovich) and the paths $Y$ as the samples. The discriminator is a neural CDE
driven by the (generated or real) path, with time as one more channel, $\hat Y_t = (t, Y_t)$,
linearly interpolated between the observation times:

$$ h_{t_0} = \xi_\phi(\hat Y_{t_0}), \qquad dh = f_\phi(t, h)\,d\hat Y_t, \qquad
   D(Y) = m_\phi \cdot h_T. $$

Trained as a Wasserstein GAN: the discriminator (critic) maximises
$\mathbb E[D(Y_\mathrm{real})] - \mathbb E[D(Y_\mathrm{fake})]$ and the generator minimises
$-\mathbb E[D(Y_\mathrm{fake})]$. The critic must be Lipschitz: by *weight clipping* of every
linear layer of the discriminator to $[-1/\mathrm{out}, 1/\mathrm{out}]$ with LipSwish
activations ($0.909\,\mathrm{silu}$) (Kidger, Foster, Li, Lyons 2021, who showed this
suffices and avoids the double backward a gradient penalty needs), or by the *gradient
penalty* of WGAN-GP, $\lambda (\lVert \nabla_{\hat y} D(\hat y) \rVert - 1)^2$ at random
interpolates of real and generated paths (the original SDE-GAN paper).

Both solves use the reversible Heun method by default, with :class:`~torchnde.ReversibleAdjoint`
(exact gradients in memory independent of the number of steps). The architecture and
initialisation follow torchsde's ``examples/sde_gan.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import describe

__all__ = ["LipSwish", "SDEGAN"]

LIPSCHITZ = ("clip", "gp")


class LipSwish(nn.Module):
    r"""$0.909\,x\,\mathrm{sigmoid}(x)$: SiLU scaled to be 1-Lipschitz (Chen et al. 2019)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.909 * nn.functional.silu(x)


def _mlp(n_in: int, n_out: int, width: int, num_layers: int, tanh: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(n_in, width), LipSwish()]
    for _ in range(num_layers - 1):
        layers += [nn.Linear(width, width), LipSwish()]
    layers.append(nn.Linear(width, n_out))
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _with_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([t.to(x.dtype).expand(x.shape[:-1] + (1,)), x], dim=-1)


class _ReverseGradient(torch.autograd.Function):
    """The identity forward, the negated gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class _Generator(nn.Module):
    def __init__(self, data_size: int, initial_noise_size: int, noise_size: int, hidden: int,
                 width: int, num_layers: int) -> None:  # fmt: skip
        super().__init__()
        self.initial_noise_size, self.noise_size, self.hidden = (
            initial_noise_size,
            noise_size,
            hidden,
        )
        self.initial = _mlp(initial_noise_size, hidden, width, num_layers, tanh=False)
        self.drift = _mlp(1 + hidden, hidden, width, num_layers, tanh=True)
        self.diffusion = _mlp(1 + hidden, hidden * noise_size, width, num_layers, tanh=True)
        self.readout = nn.Linear(hidden, data_size)

    def mu(self, t: torch.Tensor, x: torch.Tensor, args: Any) -> torch.Tensor:
        return self.drift(_with_time(t, x))

    def sigma(self, t: torch.Tensor, x: torch.Tensor, args: Any) -> torch.Tensor:
        out = self.diffusion(_with_time(t, x))
        return out.view(x.shape[:-1] + (self.hidden, self.noise_size))


class _Discriminator(nn.Module):
    def __init__(self, data_size: int, hidden: int, width: int, num_layers: int) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, 1 + data_size
        self.initial = _mlp(1 + data_size, hidden, width, num_layers, tanh=False)
        self.field = _mlp(1 + hidden, hidden * (1 + data_size), width, num_layers, tanh=True)
        self.readout = nn.Linear(hidden, 1)

    def f(self, t: torch.Tensor, h: torch.Tensor, args: Any) -> torch.Tensor:
        out = self.field(_with_time(t, h))
        return out.view(h.shape[:-1] + (self.hidden, self.channels))


class SDEGAN(nn.Module):
    r"""A neural SDE generator with a neural CDE discriminator, trained as a Wasserstein GAN
    (Kidger et al. 2021).

    See the module docstring for the model. Paths are time first: ``(len(ts), batch,
    data_size)``, at the common increasing times ``ts``. One training step with a single
    optimiser over both networks (torchsde's simultaneous descent–ascent)::

        loss = model.loss(ts, real).mean()  # real: (len(ts), batch, data_size)
        opt.zero_grad(); loss.backward(); opt.step()
        model.constrain_()                  # weight clipping (no-op with lipschitz="gp")

    :meth:`loss` reverses the gradient that reaches the generator, so one descent step lowers
    the critic's loss and the generator's at the same time.

    Args:
        data_size: channels of the paths.
        initial_noise_size: size of the initial noise $V$.
        noise_size: channels of the Brownian motion $W$.
        hidden_size: size of the generator's and the discriminator's hidden states.
        mlp_size: width of the networks.
        num_layers: hidden layers of the networks.
        lipschitz: ``"clip"`` (weight clipping, Kidger, Foster, Li, Lyons 2021) or ``"gp"``
            (gradient penalty, Gulrajani et al. 2017) for the critic's Lipschitz constraint.
        gp_weight: $\lambda$ of the gradient penalty.
        dt: the step of both solves (default: the smallest spacing of ``ts``).
        solver: the solver of both (``ReversibleHeun()`` by default; Stratonovich).
        adjoint: how to differentiate both solves; ``ReversibleAdjoint()`` by default
            (``DirectAdjoint()`` with ``lipschitz="gp"``, whose penalty differentiates
            twice).
        init_scale: multipliers of the initial network's and of the generator's vector
            fields' initial parameters (torchsde's ``init_mult1``, ``init_mult2``).

    Raises:
        ValueError: a size not a positive int, an unknown ``lipschitz``, a negative
            ``gp_weight``, ``lipschitz="gp"`` with an adjoint other than ``DirectAdjoint``
            (the others have no double backward), or ``ReversibleAdjoint`` with a solver
            that is not reversible.

    References:
        P. Kidger, J. Foster, X. Li, H. Oberhauser, T. Lyons, "Neural SDEs as
        infinite-dimensional GANs", ICML 2021.

        P. Kidger, J. Foster, X. Li, T. Lyons, "Efficient and accurate gradients for neural
        SDEs", NeurIPS 2021.

    Example:
        >>> gan = SDEGAN(data_size=1)
        >>> ts = torch.linspace(0, 31, 32)
        >>> fake = gan.sample(ts, 64)  # (32, 64, 1)
        >>> scores = gan.score(ts, fake)  # (64,)
    """

    def __init__(
        self,
        data_size: int,
        *,
        initial_noise_size: int = 5,
        noise_size: int = 3,
        hidden_size: int = 16,
        mlp_size: int = 16,
        num_layers: int = 1,
        lipschitz: str = "clip",
        gp_weight: float = 10.0,
        dt: float | None = None,
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        init_scale: tuple[float, float] = (3.0, 0.5),
    ) -> None:
        super().__init__()
        for name, v in (
            ("data_size", data_size),
            ("initial_noise_size", initial_noise_size),
            ("noise_size", noise_size),
            ("hidden_size", hidden_size),
            ("mlp_size", mlp_size),
            ("num_layers", num_layers),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SDEGAN: `{name}` must be an int >= 1, got {v!r}.")
        if lipschitz not in LIPSCHITZ:
            raise ValueError(
                f"SDEGAN: `lipschitz` must be 'clip' (weight clipping) or 'gp' (gradient "
                f"penalty), got {lipschitz!r}."
            )
        if (
            isinstance(gp_weight, bool)
            or not isinstance(gp_weight, (int, float))
            or not (math.isfinite(gp_weight) and gp_weight >= 0)
        ):
            raise ValueError(f"SDEGAN: `gp_weight` must be a number >= 0, got {gp_weight!r}.")
        if dt is not None and (
            isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0
        ):
            raise ValueError(f"SDEGAN: `dt` must be a positive number or None, got {dt!r}.")
        if solver is not None and not isinstance(solver, tn.AbstractSolver):
            raise TypeError(
                f"SDEGAN: `solver` must be a solver such as tn.ReversibleHeun(), got "
                f"{describe(solver)}."
            )
        if adjoint is not None and not isinstance(adjoint, tn.AbstractAdjoint):
            raise TypeError(
                f"SDEGAN: `adjoint` must be an adjoint such as tn.ReversibleAdjoint(), got "
                f"{describe(adjoint)}."
            )
        if lipschitz == "gp" and adjoint is not None and not isinstance(adjoint, tn.DirectAdjoint):
            raise ValueError(
                "SDEGAN: lipschitz='gp' differentiates the discriminator twice, which only "
                f"DirectAdjoint supports, got adjoint={adjoint!r}; pass "
                "adjoint=tn.DirectAdjoint() or use lipschitz='clip'."
            )
        self.data_size = data_size
        self.lipschitz, self.gp_weight = lipschitz, float(gp_weight)
        self.dt = None if dt is None else float(dt)
        self.solver = solver if solver is not None else tn.ReversibleHeun()
        if adjoint is None:
            adjoint = tn.DirectAdjoint() if lipschitz == "gp" else tn.ReversibleAdjoint()
        if isinstance(adjoint, tn.ReversibleAdjoint) and not isinstance(
            self.solver, tn.AbstractReversibleSolver
        ):
            raise ValueError(
                f"SDEGAN: ReversibleAdjoint needs a reversible solver such as "
                f"tn.ReversibleHeun(), got solver={self.solver!r}; pass "
                "adjoint=tn.DirectAdjoint() for other solvers."
            )
        self.adjoint = adjoint
        #: The generator: ``initial``, ``drift``, ``diffusion`` and ``readout`` networks.
        self.generator = _Generator(
            data_size, initial_noise_size, noise_size, hidden_size, mlp_size, num_layers
        )
        #: The discriminator: ``initial``, ``field`` and ``readout`` networks.
        self.discriminator = _Discriminator(data_size, hidden_size, mlp_size, num_layers)
        with torch.no_grad():
            for p in self.generator.initial.parameters():
                p.mul_(init_scale[0])
            for p in [*self.generator.drift.parameters(), *self.generator.diffusion.parameters()]:
                p.mul_(init_scale[1])

    # -- checks ------------------------------------------------------------------------------

    def _ts(self, ts: Any) -> torch.Tensor:
        p = self.generator.readout.weight
        ts = torch.as_tensor(ts, dtype=p.dtype, device=p.device)
        if ts.ndim != 1 or ts.numel() < 2 or bool((ts.diff() <= 0).any()):
            raise ValueError(
                "SDEGAN: `ts` must be a 1-D strictly increasing tensor of at least two times, "
                f"got {describe(ts)}."
            )
        return ts

    def _step(self, ts: torch.Tensor) -> float:
        return self.dt if self.dt is not None else float(ts.diff().min())

    def _check_paths(self, name: str, ys: Any, ts: torch.Tensor) -> None:
        if not isinstance(ys, torch.Tensor) or not torch.is_floating_point(ys):
            raise TypeError(
                f"SDEGAN: `{name}` must be a floating-point tensor of shape (len(ts), batch, "
                f"{self.data_size}), got {describe(ys)}."
            )
        if ys.ndim != 3 or ys.shape[0] != ts.shape[0] or ys.shape[2] != self.data_size:
            raise ValueError(
                f"SDEGAN: `{name}` must have shape ({ts.shape[0]}, batch, {self.data_size}) "
                f"(time first, len(ts) = {ts.shape[0]}), got shape {tuple(ys.shape)}."
            )

    # -- generator ---------------------------------------------------------------------------

    def sample(
        self,
        ts: torch.Tensor,
        batch_size: int,
        *,
        initial_noise: torch.Tensor | None = None,
        bm: tn.AbstractPath | None = None,
    ) -> torch.Tensor:
        """Generated paths at ``ts``, shape ``(len(ts), batch_size, data_size)``.

        Args:
            ts: the times, 1-D increasing.
            batch_size: how many paths.
            initial_noise: $V$, shape ``(batch_size, initial_noise_size)``; fresh by default.
            bm: the Brownian motion on ``[ts[0], ts[-1]]`` of shape ``(batch_size,
                noise_size)``; a fresh :class:`~torchnde.BrownianInterval` by default.
        """
        ts = self._ts(ts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"SDEGAN: `batch_size` must be an int >= 1, got {batch_size!r}.")
        gen = self.generator
        shape = (batch_size, gen.initial_noise_size)
        if initial_noise is None:
            initial_noise = torch.randn(shape, dtype=ts.dtype, device=ts.device)
        elif tuple(initial_noise.shape) != shape:
            raise ValueError(
                f"SDEGAN: `initial_noise` must have shape {shape}, got "
                f"{tuple(initial_noise.shape)}."
            )
        if bm is None:
            bm = tn.BrownianInterval(
                float(ts[0]), float(ts[-1]), (batch_size, gen.noise_size), dtype=ts.dtype,
                device=ts.device,
            )  # fmt: skip
        x0 = gen.initial(initial_noise)
        terms = tn.MultiTerm(
            tn.ODETerm(gen.mu), tn.ControlTerm(gen.sigma, bm, "general", "stratonovich")
        )
        sol = tn.solve(
            terms, self.solver, ts[0], ts[-1], x0, dt0=self._step(ts),
            saveat=tn.SaveAt(ts=ts), controller=tn.ConstantStepSize(), adjoint=self.adjoint,
        )  # fmt: skip
        return gen.readout(sol.ys)

    # -- discriminator -----------------------------------------------------------------------

    def score(self, ts: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        r"""The critic's score $D(Y)$ of each path, shape ``(batch,)``.

        Args:
            ts: the times, 1-D increasing.
            ys: the paths, shape ``(len(ts), batch, data_size)``.
        """
        ts = self._ts(ts)
        self._check_paths("ys", ys, ts)
        disc = self.discriminator
        data = _with_time(ts[:, None, None], ys).transpose(0, 1)  # (batch, len(ts), 1 + data)
        X = tn.LinearInterpolation(tn.linear_interpolation_coeffs(data, ts), ts)
        h0 = disc.initial(data[:, 0])
        sol = tn.solve(
            tn.ControlTerm(disc.f, X, "general"), self.solver, ts[0], ts[-1], h0,
            dt0=self._step(ts), controller=tn.ConstantStepSize(), adjoint=self.adjoint,
        )  # fmt: skip
        return disc.readout(sol.ys[-1])[..., 0]

    def gradient_penalty(
        self, ts: torch.Tensor, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        r"""$\lambda (\lVert \nabla_{\hat y} D(\hat y) \rVert_2 - 1)^2$ of each sample at
        $\hat y = \epsilon\, y_\mathrm{real} + (1 - \epsilon)\, y_\mathrm{fake}$,
        $\epsilon \sim U(0, 1)$ per sample (WGAN-GP), shape ``(batch,)``; it differentiates
        the discriminator only (``fake`` is detached)."""
        eps = torch.rand(1, real.shape[1], 1, dtype=real.dtype, device=real.device)
        mix = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.score(ts, mix).sum(), mix, create_graph=True)
        norm = grad.transpose(0, 1).reshape(real.shape[1], -1).norm(dim=-1)
        return self.gp_weight * (norm - 1) ** 2

    # -- training ----------------------------------------------------------------------------

    def loss(self, ts: torch.Tensor, real: torch.Tensor, **sample_kwargs: Any) -> torch.Tensor:
        r"""The per-sample Wasserstein objective $D(Y_\mathrm{fake}) - D(Y_\mathrm{real})$
        (plus the gradient penalty with ``lipschitz="gp"``), shape ``(batch,)``, with as many
        generated paths as real ones.

        Minimising its mean trains the critic; the gradient reaching the generator is
        reversed, so the same descent step also trains the generator to raise
        $D(Y_\mathrm{fake})$ (simultaneous gradient descent–ascent, as torchsde's example).

        Args:
            ts: the times, 1-D increasing.
            real: real paths, shape ``(len(ts), batch, data_size)``.
            sample_kwargs: ``initial_noise`` / ``bm`` for :meth:`sample`.
        """
        ts = self._ts(ts)
        self._check_paths("real", real, ts)
        fake = self.sample(ts, real.shape[1], **sample_kwargs)
        out = self.score(ts, _ReverseGradient.apply(fake)) - self.score(ts, real)
        if self.lipschitz == "gp" and self.gp_weight > 0:
            out = out + self.gradient_penalty(ts, real, fake)
        return out

    @torch.no_grad()
    def constrain_(self) -> None:
        """Clip every linear layer of the discriminator to $[-1/\\mathrm{out},
        1/\\mathrm{out}]$ (``lipschitz="clip"``); call it after each optimiser step. Does
        nothing with ``lipschitz="gp"``."""
        if self.lipschitz != "clip":
            return
        for module in self.discriminator.modules():
            if isinstance(module, nn.Linear):
                lim = 1.0 / module.out_features
                module.weight.clamp_(-lim, lim)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(generator parameters, discriminator parameters)``, e.g. for two learning rates
        in one optimiser."""
        return list(self.generator.parameters()), list(self.discriminator.parameters())
