r"""The neural ODE layer and the wrappers that adapt networks to vector fields."""

from __future__ import annotations

import numbers
import typing
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import SolveConfig, check_vector_field, describe
from .regularisers import AbstractRegulariser, SolverHeuristic, augmented_dynamics, sample_noise

__all__ = ["Autonomous", "DepthCat", "NeuralODE"]


class Autonomous(nn.Module):
    r"""Use a network of the state alone, ``net(x)``, as a vector field $f(t, x) =
    \mathrm{net}(x)$. The zoo calls vector fields as ``f(t, x)``; this wrapper is the one
    documented way to pass an ``nn.Sequential`` (signatures are never probed).

    Example:
        >>> node = NeuralODE(Autonomous(nn.Sequential(nn.Linear(2, 16), nn.Tanh(),
        ...                                           nn.Linear(16, 2))))
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"Autonomous: `net` must be callable as net(x), got {describe(net)}.")
        self.net = net

    def forward(self, t: torch.Tensor, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.net(x, *args)


class DepthCat(nn.Module):
    r"""A depth-variant vector field $f(t, x) = \mathrm{net}([x, t])$: the time is appended
    to ``x`` as one more channel along ``dim`` (a constant plane for images), as in
    "Dissecting Neural ODEs" (Massaroli et al. 2020). ``net`` takes one channel more than
    the state has."""

    def __init__(self, net: nn.Module, dim: int = 1) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"DepthCat: `net` must be callable as net(x), got {describe(net)}.")
        self.net, self.dim = net, dim

    def forward(self, t: torch.Tensor, x: torch.Tensor, *args: Any) -> torch.Tensor:
        shape = list(x.shape)
        shape[self.dim] = 1
        if t.ndim == 0:
            tt = t.to(x.dtype).expand(shape)
        else:  # per-sample times (batch,)
            tt = t.to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1)).expand(shape)
        return self.net(torch.cat([x, tt], self.dim), *args)


def _time(name: str, v: Any) -> float | torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    raise TypeError(f"NeuralODE: `{name}` must be a number or a tensor, got {describe(v)}.")


class NeuralODE(nn.Module):
    r"""A neural ODE layer: $x \mapsto y(t_1)$ with $\dot y = f_\theta(t, y)$, $y(t_0) = x$
    (Chen et al. 2018).

    The vector field is a module (or callable) called as ``f(t, x)``, or ``f(t, x, args)``
    when ``forward`` gets ``args``: it may depend on the depth ``t`` (see :class:`DepthCat`)
    and on extra inputs; passing the layer input itself as ``args`` gives the
    *data-controlled* fields of "Dissecting Neural ODEs" (Massaroli et al. 2020),
    ``f(t, y, x)``. Wrap a network of ``x`` alone with :class:`Autonomous`.

    Args:
        vector_field: ``f(t, x)`` returning $dx/dt$ with the shape of ``x``.
        solver: a torchnde solver (``Tsit5()`` by default); a fixed-step one needs ``dt0``.
        adjoint: how to differentiate the solve (``DirectAdjoint()`` by default; every
            torchnde adjoint works, regularisers included).
        t0, t1: integration interval.
        ts: save times; then ``forward`` returns the trajectory ``(len(ts), *x.shape)``, time
            first.
        rtol, atol: tolerances of the default :class:`~torchnde.PIDController`; or pass
            ``controller=`` (not both).
        dt0: the (initial) step size.
        max_steps: step budget of one solve.
        regularisers: running costs integrated with the state (:class:`KineticEnergy`,
            :class:`JacobianFrobenius`, :class:`TaylorPenalty`) and/or a
            :class:`SolverHeuristic`; their per-sample values, averaged over the batch, are in
            ``self.regularisation`` (a dict by name) after each call: add them to the loss.
        steer: STEER (Ghosh et al. 2020): in training mode the end time is drawn uniformly
            from $[t_1 - b, t_1 + b]$ at every call, $b$ = ``steer`` $< |t_1 - t_0|$; in
            eval mode it is $t_1$. Not combinable with ``ts``.

    After each call, ``self.last_stats`` holds the solve's stats (``num_steps``,
    ``num_accepted_steps``, ``num_rejected_steps``, ``num_fevals``) and ``self.nfe`` counts
    the vector-field calls made since the call began (the backward pass's included, once it
    has run).

    References:
        R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural ordinary differential
        equations", NeurIPS 2018.

        S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama, "Dissecting neural ODEs",
        NeurIPS 2020.

        A. Ghosh, H. S. Behl, E. Dupont, P. H. S. Torr, V. Namboodiri, "STEER: simple temporal
        regularization for neural ODEs", NeurIPS 2020.

    Example:
        >>> f = Autonomous(nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)))
        >>> node = NeuralODE(f, solver=tn.Dopri5(), adjoint=tn.BacksolveAdjoint())
        >>> node(torch.randn(8, 2)).shape
        torch.Size([8, 2])
    """

    def __init__(
        self,
        vector_field: Any,
        solver: tn.AbstractSolver | None = None,
        *,
        adjoint: tn.AbstractAdjoint | None = None,
        t0: float | torch.Tensor = 0.0,
        t1: float | torch.Tensor = 1.0,
        ts: Sequence[float] | torch.Tensor | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 65536,
        regularisers: Sequence[AbstractRegulariser | SolverHeuristic] = (),
        steer: float | None = None,
    ) -> None:
        super().__init__()
        check_vector_field("NeuralODE", vector_field)
        self.vector_field = vector_field
        self.config = SolveConfig(
            "NeuralODE", solver, adjoint, rtol, atol, controller, dt0, max_steps
        )
        self.t0, self.t1 = _time("t0", t0), _time("t1", t1)
        self.ts = None if ts is None else torch.as_tensor(ts)
        regs, heuristic = [], None
        for r in regularisers:
            if isinstance(r, SolverHeuristic):
                if not self.config.solver.is_adaptive:
                    raise ValueError(
                        "NeuralODE: SolverHeuristic penalises error estimates; use an adaptive "
                        f"solver, got {self.config.solver!r}."
                    )
                heuristic = r
            elif isinstance(r, AbstractRegulariser):
                regs.append(r)
            else:
                raise TypeError(
                    "NeuralODE: `regularisers` must hold KineticEnergy(), JacobianFrobenius(), "
                    f"TaylorPenalty(...) or SolverHeuristic(), got {describe(r)}."
                )
        names = [r.name for r in regs] + ([heuristic.name] if heuristic else [])
        if len(set(names)) != len(names):
            raise ValueError(f"NeuralODE: `regularisers` has duplicates: {names}.")
        self.regularisers: list[AbstractRegulariser] = regs
        self.heuristic = heuristic
        if steer is not None:
            span = abs(float(t1) - float(t0))
            if not (isinstance(steer, numbers.Real) and 0 < float(steer) < span):
                raise ValueError(
                    f"NeuralODE: `steer` must be a number in (0, |t1 - t0|) = (0, {span:g}), "
                    f"got {steer!r}."
                )
            if ts is not None:
                raise ValueError("NeuralODE: `steer` randomises t1 and cannot be used with `ts`.")
        self.steer = steer
        self.nfe = 0
        self.last_stats: dict[str, Any] = {}
        self.regularisation: dict[str, torch.Tensor] = {}

    def _f(self, args: Any) -> Any:
        vf = self.vector_field

        def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.nfe += 1
            return vf(t, y) if args is None else vf(t, y, args)

        return f

    def _end_time(self) -> Any:
        if self.steer is None or not self.training:
            return self.t1
        sign = 1.0 if float(self.t1) >= float(self.t0) else -1.0
        u = 2 * float(torch.rand(())) - 1
        return self.t1 + sign * self.steer * u

    def forward(
        self, x: torch.Tensor, args: Any = None, ts: Sequence[float] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Solve from ``x`` at ``t0``. Returns ``y(t1)`` with the shape of ``x``, or, with save
        times (``ts`` here or in the constructor), the trajectory ``(len(ts), *x.shape)``,
        time first. ``args`` is passed to the vector field as ``f(t, x, args)``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"NeuralODE: the input must be a tensor, got {describe(x)}.")
        ts_ = self.ts if ts is None else torch.as_tensor(ts)
        self.nfe = 0
        f = self._f(args)
        regs = self.regularisers
        if regs and x.ndim == 0:
            raise ValueError("NeuralODE: regularisers need a batch dimension; got a 0-d input.")
        noise = None
        if any(r.needs_noise for r in regs):
            kind = next(r.noise for r in regs if r.needs_noise)  # type: ignore[attr-defined]
            noise = sample_noise(x, kind)
        dyn = augmented_dynamics(f, regs, None, noise)
        y0: Any = (x, *(x.new_zeros(x.shape[0]) for _ in regs)) if regs else x
        t1 = self._end_time()
        heur = self.heuristic
        if ts_ is not None:
            # with regularisers also save t1: their integrals run over the whole interval
            extra = heur is not None or bool(regs)
            saveat = tn.SaveAt(ts=ts_, steps=heur is not None, t1=extra)
        else:
            saveat = tn.SaveAt(t1=True, steps=heur is not None, t0=heur is not None)
        sol = self.config.solve(dyn, self.t0, t1, y0, saveat, args)
        self.last_stats = dict(sol.stats)
        ys = sol.ys[0] if regs else sol.ys
        self.regularisation = {}
        for i, r in enumerate(regs):
            self.regularisation[r.name] = sol.ys[1 + i][-1].mean()
        n_ts = 0 if ts_ is None else ts_.numel()
        if heur is not None:
            st, sy = typing.cast(torch.Tensor, sol.ts), ys
            if ts_ is None:  # t0, steps (the last step ends at t1), t1
                st, sy = st[:-1], sy[:-1]
            else:  # ts, steps, t1: the steps, after t0 and y0
                t_start = torch.as_tensor(self.t0, dtype=st.dtype, device=st.device).reshape(1)
                st = torch.cat([t_start, st[n_ts:-1]])
                sy = torch.cat([x[None], sy[n_ts:-1]])
            self.regularisation[heur.name] = heur.compute(
                self.config.solver, self.config.controller, lambda t, y, a: f(t, y), st, sy, args
            ).mean()
        if ts_ is not None:
            return ys[:n_ts]
        return ys[-1]

    def extra_repr(self) -> str:
        return f"t0={self.t0}, t1={self.t1}, {self.config!r}"
