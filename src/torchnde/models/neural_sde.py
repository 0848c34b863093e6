r"""Neural SDE layers: a neural ODE block regularised by stochastic noise (Liu et al. 2019).

In training mode the block's hidden state follows an Itô SDE instead of the neural ODE
$\dot h = f_\theta(t, h)$:

$$ dh = f_\theta(t, h)\,dt + G(t, h)\,dW_t, $$

with one of the paper's noise models (diagonal):

- ``"additive"``: $G = \sigma I$;
- ``"multiplicative"``: $G = \sigma\,\mathrm{diag}(h)$;
- ``"dropout"``: $G = \sqrt{p / (1 - p)}\,\mathrm{diag}(f_\theta(t, h))$, the continuous
  limit of (Gaussian) dropout of the vector field, with $p$ = ``sigma`` $\in (0, 1)$.

The noise acts as a regulariser (it smooths the flow and makes the block robust to input
perturbations); at evaluation time the block is either the deterministic neural ODE (the
noise switched off) or the average of several SDE solves.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import check_vector_field, describe

__all__ = ["NeuralSDE"]

NOISES = ("additive", "multiplicative", "dropout")
EVAL_MODES = ("deterministic", "average")


class NeuralSDE(nn.Module):
    r"""A neural ODE block $x \mapsto h(t_1)$, $h(t_0) = x$, trained with stochastic noise
    in the dynamics (Liu et al. 2019, "Neural SDE: stabilizing neural ODE networks with
    stochastic noise").

    In ``train()`` mode each call solves the SDE of the module docstring with fresh noise;
    in ``eval()`` mode it solves the ODE $\dot h = f_\theta(t, h)$ (``eval_mode=
    "deterministic"``) or averages ``num_eval_samples`` SDE solves (``"average"``). Both use
    fixed steps ``dt0`` on $[t_0, t_1]$.

    Args:
        vector_field: $f_\theta(t, h)$, a module or callable returning the shape of ``h``
            (wrap a network of ``h`` alone in :class:`~torchnde.models.Autonomous`).
        noise: ``"additive"``, ``"multiplicative"`` or ``"dropout"``.
        sigma: $\sigma$ of the additive and multiplicative noise; the dropout rate $p \in
            (0, 1)$ of ``"dropout"``. ``0`` switches the noise off.
        t0, t1: the integration interval.
        dt0: the fixed step.
        solver: the SDE solver (Itô; ``EulerMaruyama()`` by default).
        ode_solver: the solver of the deterministic evaluation (``Euler()`` by default, the
            noise-free limit of Euler–Maruyama on the same steps).
        adjoint: how to differentiate the solves (``DirectAdjoint()`` by default).
        eval_mode: ``"deterministic"`` or ``"average"``.
        num_eval_samples: solves averaged with ``eval_mode="average"``.

    Raises:
        ValueError: an unknown ``noise`` or ``eval_mode``, a negative ``sigma`` (or a
            dropout rate outside $[0, 1)$), ``t1 <= t0``, a non-positive ``dt0`` or
            ``num_eval_samples < 1``.
        TypeError: a vector field that is not callable as ``f(t, h)`` (a bare
            ``nn.Sequential``).

    References:
        X. Liu, T. Xiao, S. Si, Q. Cao, S. Kumar, C.-J. Hsieh, "Neural SDE: stabilizing
        neural ODE networks with stochastic noise", arXiv:1906.02355, 2019.

    Example:
        >>> f = Autonomous(nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)))
        >>> block = NeuralSDE(f, noise="additive", sigma=0.2)
        >>> block(torch.randn(8, 2)).shape  # noisy (training mode)
        torch.Size([8, 2])
        >>> block.eval()(torch.randn(8, 2)).shape  # the deterministic neural ODE
        torch.Size([8, 2])
    """

    def __init__(
        self,
        vector_field: Any,
        *,
        noise: str = "additive",
        sigma: float = 0.1,
        t0: float = 0.0,
        t1: float = 1.0,
        dt0: float = 0.05,
        solver: tn.AbstractSolver | None = None,
        ode_solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        eval_mode: str = "deterministic",
        num_eval_samples: int = 8,
    ) -> None:
        super().__init__()
        check_vector_field("NeuralSDE", vector_field)
        if noise not in NOISES:
            raise ValueError(f"NeuralSDE: `noise` must be one of {list(NOISES)}, got {noise!r}.")
        if eval_mode not in EVAL_MODES:
            raise ValueError(
                f"NeuralSDE: `eval_mode` must be one of {list(EVAL_MODES)}, got {eval_mode!r}."
            )
        if (
            isinstance(sigma, bool)
            or not isinstance(sigma, (int, float))
            or not (math.isfinite(sigma) and sigma >= 0)
        ):
            raise ValueError(f"NeuralSDE: `sigma` must be a number >= 0, got {sigma!r}.")
        if noise == "dropout" and not sigma < 1:
            raise ValueError(
                f"NeuralSDE: with noise='dropout', `sigma` is the dropout rate p and must lie "
                f"in [0, 1), got {sigma!r}."
            )
        for name, v in (("t0", t0), ("t1", t1), ("dt0", dt0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"NeuralSDE: `{name}` must be a finite number, got {v!r}.")
        if not t1 > t0:
            raise ValueError(f"NeuralSDE: need t1 > t0, got t0={t0!r}, t1={t1!r}.")
        if not dt0 > 0:
            raise ValueError(f"NeuralSDE: `dt0` must be positive, got {dt0!r}.")
        if (
            isinstance(num_eval_samples, bool)
            or not isinstance(num_eval_samples, int)
            or num_eval_samples < 1
        ):
            raise ValueError(
                f"NeuralSDE: `num_eval_samples` must be an int >= 1, got {num_eval_samples!r}."
            )
        for name, s in (("solver", solver), ("ode_solver", ode_solver)):
            if s is not None and not isinstance(s, tn.AbstractSolver):
                raise TypeError(
                    f"NeuralSDE: `{name}` must be a solver instance, got {describe(s)}."
                )
        if adjoint is not None and not isinstance(adjoint, tn.AbstractAdjoint):
            raise TypeError(f"NeuralSDE: `adjoint` must be an adjoint, got {describe(adjoint)}.")
        self.vector_field = vector_field
        self.noise, self.sigma = noise, float(sigma)
        self.t0, self.t1, self.dt0 = float(t0), float(t1), float(dt0)
        self.solver = solver if solver is not None else tn.EulerMaruyama()
        self.ode_solver = ode_solver if ode_solver is not None else tn.Euler()
        self.adjoint = adjoint
        self.eval_mode, self.num_eval_samples = eval_mode, num_eval_samples

    def _drift(self, t: torch.Tensor, h: torch.Tensor, args: Any) -> torch.Tensor:
        return self.vector_field(t, h)

    def _diffusion(self, t: torch.Tensor, h: torch.Tensor, args: Any) -> torch.Tensor:
        if self.noise == "additive":
            return torch.full_like(h, self.sigma)
        if self.noise == "multiplicative":
            return self.sigma * h
        return math.sqrt(self.sigma / (1 - self.sigma)) * self.vector_field(t, h)

    def ode(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic block: the neural ODE solved from ``x``, the shape of ``x``."""
        sol = tn.solve(
            tn.ODETerm(self._drift), self.ode_solver, self.t0, self.t1, x, dt0=self.dt0,
            controller=tn.ConstantStepSize(), adjoint=self.adjoint,
        )  # fmt: skip
        return sol.ys[-1]

    def sde(self, x: torch.Tensor, *, bm: tn.AbstractPath | None = None) -> torch.Tensor:
        """One solve of the noisy block from ``x`` (the shape of ``x``), with the Brownian
        motion ``bm`` (of ``x``'s shape on ``[t0, t1]``; fresh by default)."""
        if self.sigma == 0:
            return self.ode(x)
        if bm is None:
            bm = tn.BrownianInterval(
                self.t0, self.t1, tuple(x.shape), dtype=x.dtype, device=x.device
            )
        terms = tn.MultiTerm(
            tn.ODETerm(self._drift), tn.ControlTerm(self._diffusion, bm, "diagonal", "ito")
        )
        sol = tn.solve(
            terms, self.solver, self.t0, self.t1, x, dt0=self.dt0,
            controller=tn.ConstantStepSize(), adjoint=self.adjoint,
        )  # fmt: skip
        return sol.ys[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """$h(t_1)$ from $h(t_0) = x$: noisy in training mode; the ODE or the average of
        ``num_eval_samples`` noisy solves in eval mode. The shape of ``x``."""
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x) or x.ndim < 1:
            raise TypeError(
                f"NeuralSDE: the input must be a floating-point tensor (batch, ...), got "
                f"{describe(x)}."
            )
        if self.training:
            return self.sde(x)
        if self.eval_mode == "deterministic":
            return self.ode(x)
        # The samples as one batch: k copies solved together (one solve, k times the batch).
        k = self.num_eval_samples
        out = self.sde(x.repeat((k,) + (1,) * (x.ndim - 1)))
        return out.reshape((k,) + tuple(x.shape)).mean(0)
