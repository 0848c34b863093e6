r"""Multiple shooting layers: parallel-in-time solves by root finding over segments."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import SolveConfig, check_vector_field, describe
from ._rk import rk_solver, rk_step

__all__ = ["MultipleShooting"]


class MultipleShooting(nn.Module):
    r"""A multiple shooting layer (Massaroli et al. 2021): the solve of
    $\dot y = f(t, y)$, $y(t_0) = x$ on $[t_0, t_1]$ split into $N$ equal segments whose
    initial states $B_0, \dots, B_N$ are found by root finding on

    $$R(B) = \big(B_0 - x,\; B_{n+1} - \varphi_n(B_n)\big)_{n<N} = 0,$$

    where $\varphi_n$ is the (fine) solver's flow map over segment $n$. Each iteration
    evaluates $\varphi_n(B_n)$ for all segments at once: one solve of length
    $(t_1 - t_0)/N$ on a batch $N$ times larger, so the *sequential* cost per iteration is
    that of one segment. The update runs along the segments with matrix products only:

    - ``"newton"``: $B^{k+1}_{n+1} = \varphi_n(B^k_n) + \partial\varphi_n(B^k_n)
      (B^{k+1}_n - B^k_n)$ with the Jacobian from the variational equation
      $\dot\Phi = \partial_y f\,\Phi$, solved with the state ($d$ Jacobian-vector products
      per evaluation, batched work that does not lengthen the sequential chain);
    - ``"zeroth"``: the zeroth-order variant $\partial\varphi \approx I$,
      $B^{k+1}_{n+1} = \varphi_n(B^k_n) + B^{k+1}_n - B^k_n$ (no derivatives);
    - ``"parareal"``: $\partial\varphi$ replaced by a coarse propagator $G$ (one step of
      ``coarse_solver`` per segment): $B^{k+1}_{n+1} = \varphi_n(B^k_n) + G(B^{k+1}_n) -
      G(B^k_n)$, which costs $N$ sequential coarse steps per iteration.

    Every variant reproduces the sequential fine solution exactly after at most $N$
    iterations (iteration $k$ fixes segment $k$); Newton converges quadratically and usually
    takes far fewer. Iterations stop when the largest change of the boundaries is below
    ``tol``.

    Gradients: the iterations run without autograd; then one differentiable Newton step is
    taken from the converged boundaries with the Jacobians held constant. The Newton map has
    zero derivative at its root, so this step has exactly the implicit-function-theorem
    derivative of the root, i.e. the derivative of the sequential solution (the flow maps
    are differentiated with the configured ``adjoint``). It costs one more parallel
    iteration with Jacobians.

    The vector field is called with per-sample times of shape ``(N * batch,)`` (one time per
    segment); the state must be ``(batch, d)``.

    Args:
        vector_field: ``f(t, y)``.
        num_segments: $N$.
        method: ``"newton"``, ``"zeroth"`` or ``"parareal"``.
        t0, t1: the interval.
        solver, dt0, rtol, atol, controller, adjoint, max_steps: the fine solve of one
            segment (as for :class:`NeuralODE`; ``dt0`` is the fine step).
        coarse_solver: the coarse propagator of ``"parareal"``, one step per segment of an
            explicit Runge–Kutta solver (``Euler()`` by default) or a ``ButcherTableau``.
        max_iters: at most this many iterations (default $N$, where all variants are exact).
        tol: stopping tolerance on $\max|B^{k+1} - B^k|$.

    After a call, ``self.last_stats`` holds ``iterations``, ``sequential_fevals`` (vector-field
    evaluations along the sequential chain: per iteration, the evaluations of one segment's
    fine solve, all segments running as one batch, plus parareal's coarse steps; with
    autograd on, the two solves of the final differentiable step included) and
    ``total_fevals`` (the work: every segment's evaluations summed, each of the $d$
    Jacobian-vector products of a Newton iteration counted as one evaluation).

    References:
        S. Massaroli, M. Poli, S. Sonoda, T. Suzuki, J. Park, A. Yamashita, H. Asama,
        "Differentiable multiple shooting layers", NeurIPS 2021.
    """

    def __init__(
        self,
        vector_field: Any,
        num_segments: int,
        method: str = "newton",
        *,
        t0: float = 0.0,
        t1: float = 1.0,
        solver: tn.AbstractSolver | None = None,
        dt0: float | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        max_steps: int = 65536,
        coarse_solver: tn.AbstractSolver | None = None,
        max_iters: int | None = None,
        tol: float = 1e-8,
    ) -> None:
        super().__init__()
        check_vector_field("MultipleShooting", vector_field)
        if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 1:
            raise ValueError(
                f"MultipleShooting: `num_segments` must be a positive int, got {num_segments!r}."
            )
        if method not in ("newton", "zeroth", "parareal"):
            raise ValueError(
                "MultipleShooting: `method` must be 'newton', 'zeroth' or 'parareal', got "
                f"{method!r}."
            )
        if not float(t1) > float(t0):
            raise ValueError(f"MultipleShooting: need t1 > t0, got t0={t0!r}, t1={t1!r}.")
        self.vector_field, self.num_segments, self.method = vector_field, num_segments, method
        self.t0, self.t1 = float(t0), float(t1)
        self.config = SolveConfig(
            "MultipleShooting", solver, adjoint, rtol, atol, controller, dt0, max_steps
        )
        self.coarse = rk_solver(
            "MultipleShooting",
            "coarse_solver",
            tn.Euler() if coarse_solver is None else coarse_solver,
        )
        self.max_iters = num_segments if max_iters is None else max_iters
        self.tol = tol
        self.last_stats: dict[str, Any] = {}

    # --- the flow maps of all segments at once -------------------------------------------

    def _starts(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        n = self.num_segments
        h = (self.t1 - self.t0) / n
        s = self.t0 + h * torch.arange(n, dtype=like.dtype, device=like.device)
        return s.repeat_interleave(batch)

    def _flow(
        self, b: torch.Tensor, starts: torch.Tensor, jacobian: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """``phi_n(B_n)`` for stacked ``b`` ``(N*batch, d)``; with ``jacobian``, also
        ``d phi_n / d B_n`` ``(N*batch, d, d)``. Returns the number of evaluations."""
        vf = self.vector_field
        h = (self.t1 - self.t0) / self.num_segments

        def f(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return vf(starts + s, y)

        if not jacobian:
            sol = self.config.solve(lambda s, y, a: f(s, y), 0.0, h, b, tn.SaveAt(t1=True))
            return sol.ys[-1], None, sol.stats["num_fevals"]
        d = b.shape[1]

        def variational(s: torch.Tensor, z: tuple, a: Any) -> tuple[torch.Tensor, torch.Tensor]:
            y, phi = z
            dy = f(s, y)
            cols = [torch.func.jvp(lambda u: f(s, u), (y,), (phi[:, :, j],))[1] for j in range(d)]
            return dy, torch.stack(cols, 2)

        eye = torch.eye(d, dtype=b.dtype, device=b.device).expand(b.shape[0], d, d)
        sol = self.config.solve(variational, 0.0, h, (b, eye.clone()), tn.SaveAt(t1=True))
        y1, phi = sol.ys
        return y1[-1], phi[-1], sol.stats["num_fevals"]

    def _coarse(self, b: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One coarse step over a segment, and the vector-field calls it made."""
        h = torch.as_tensor((self.t1 - self.t0) / self.num_segments, dtype=b.dtype)
        vf = self.vector_field
        calls = [0]

        def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            return vf(t, y)

        return rk_step(f, self.coarse, start, h, b), calls[0]

    # --- root finding -----------------------------------------------------------------------

    def shoot(self, x: torch.Tensor) -> torch.Tensor:
        """The boundaries ``(N + 1, batch, d)``: $B_0 = x, \\dots, B_N \\approx y(t_1)$."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError(f"MultipleShooting: `x` must be (batch, d), got {describe(x)}.")
        n, batch, d = self.num_segments, x.shape[0], x.shape[1]
        starts = self._starts(batch, x)
        seq = work = 0
        method = self.method
        with torch.no_grad():
            bnd = x.detach().unsqueeze(0).repeat(n + 1, 1, 1)  # initial guess: constant
            iters = 0
            for _ in range(self.max_iters):
                iters += 1
                flat = bnd[:-1].reshape(n * batch, -1)
                phi_b, jac, nfe = self._flow(flat, starts, method == "newton")
                tangents = d if method == "newton" else 0
                seq, work = seq + nfe, work + n * nfe * (1 + tangents)
                phi_b = phi_b.reshape(n, batch, -1)
                jac_n = None if jac is None else jac.reshape(n, batch, *jac.shape[1:])
                new = [x.detach()]
                for k in range(n):
                    delta = new[k] - bnd[k]
                    if method == "newton":
                        corr = torch.einsum("bij,bj->bi", jac_n[k], delta)  # type: ignore[index]
                    elif method == "zeroth":
                        corr = delta
                    else:
                        t_k = starts[k * batch : (k + 1) * batch]
                        g_new, calls = self._coarse(new[k], t_k)
                        g_old, calls_old = self._coarse(bnd[k], t_k)  # parallelisable
                        corr = g_new - g_old
                        seq += calls
                        work += calls + calls_old
                    new.append(phi_b[k] + corr)
                new_b = torch.stack(new)
                change = float((new_b - bnd).abs().max())
                bnd = new_b
                if change <= self.tol:
                    break
        self.last_stats = {"iterations": iters, "sequential_fevals": seq, "total_fevals": work}
        if not torch.is_grad_enabled():
            return bnd
        # one differentiable Newton step at the root: the implicit-function-theorem derivative
        with torch.no_grad():
            _, jac, nfe_jac = self._flow(bnd[:-1].reshape(n * batch, -1), starts, True)
        phi_b, _, nfe = self._flow(bnd[:-1].reshape(n * batch, -1), starts, False)
        seq, work = seq + nfe_jac + nfe, work + n * (nfe_jac * (1 + d) + nfe)
        phi_b = phi_b.reshape(n, batch, -1)
        jac_n = jac.reshape(n, batch, *jac.shape[1:])  # type: ignore[union-attr]
        out = [x]
        for k in range(n):
            out.append(phi_b[k] + torch.einsum("bij,bj->bi", jac_n[k], out[k] - bnd[k]))
        self.last_stats = {"iterations": iters, "sequential_fevals": seq, "total_fevals": work}
        return torch.stack(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """$y(t_1)$ for ``x`` of shape ``(batch, d)``."""
        return self.shoot(x)[-1]
