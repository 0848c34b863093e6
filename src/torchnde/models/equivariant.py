r"""E(n)- and permutation-equivariant continuous normalising flows for particle systems
(Koehler, Klein, Noe 2020; Satorras, Hoogeboom, Fuchs, Posner, Welling 2021)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import torchnde as tn

from .cnf import CNF
from .regularisers import AbstractRegulariser

__all__ = ["EGNNField", "EquivariantCNF"]


def _positive_int(owner: str, name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive int, got {v!r}.")
    return v


class _EGNNLayer(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.edge = nn.Sequential(
            nn.Linear(2 * hidden + 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        last = nn.Linear(hidden, 1)
        # Start at the zero field: the flow starts at the identity.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.node = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )

    def forward(
        self, h: torch.Tensor, y: torch.Tensor, tt: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = y.shape
        diff = y.unsqueeze(2) - y.unsqueeze(1)  # (b, n, n, d): y_i - y_j
        d2 = (diff * diff).sum(-1, keepdim=True)
        hi = h.unsqueeze(2).expand(b, n, n, -1)
        hj = h.unsqueeze(1).expand(b, n, n, -1)
        m = self.edge(torch.cat([hi, hj, d2, tt], -1)) * mask
        y = y + (diff * self.coord(m) * mask).sum(2) / (n - 1)
        h = h + self.node(torch.cat([h, m.sum(2)], -1))
        return h, y


class EGNNField(nn.Module):
    r"""An E(n)-equivariant graph network (EGNN, Satorras et al. 2021) as the vector field of a
    CNF over $n$ identical particles in $d$ dimensions, state ``(batch, n, d)``.

    Every layer $l$ updates node features $h_i$ and coordinates $y_i$ ($y^0 = x$,
    $h^0_i = h_\mathrm{init}$, the same for all particles) from the pairwise messages

    $$m_{ij} = \phi_e\big(h_i, h_j, \lVert y_i - y_j\rVert^2, t\big),\quad
    y_i \leftarrow y_i + \tfrac{1}{n-1}\textstyle\sum_{j\ne i}(y_i - y_j)\,\phi_x(m_{ij}),\quad
    h_i \leftarrow h_i + \phi_h\big(h_i, \textstyle\sum_{j\ne i} m_{ij}\big),$$

    and the field is $v = y^L - x$ with its mean over the particles removed. The messages
    depend only on distances, so $v(Rx + c) = R\,v(x)$ for every orthogonal $R$ and shift $c$,
    and $v(Px) = P\,v(x)$ for every permutation $P$ of the particles; the removed mean keeps
    the flow on the centre-of-mass-free subspace $\sum_i x_i = 0$. With one layer and
    $\phi_x(m_{ij}) = \phi(\lVert x_i - x_j\rVert, t)$ this is the equivariant field of
    Koehler et al. (2020).

    Args:
        num_particles: $n \ge 2$.
        dim: $d$, the space dimension.
        hidden: width of the features and the networks $\phi_e, \phi_x, \phi_h$.
        num_layers: $L$.
    """

    def __init__(self, num_particles: int, dim: int, hidden: int = 32, num_layers: int = 2) -> None:
        super().__init__()
        _positive_int("EGNNField", "num_particles", num_particles)
        if num_particles < 2:
            raise ValueError(f"EGNNField: `num_particles` must be >= 2, got {num_particles!r}.")
        for name, v in (("dim", dim), ("hidden", hidden), ("num_layers", num_layers)):
            _positive_int("EGNNField", name, v)
        self.num_particles, self.dim = num_particles, dim
        self.h_init = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.layers = nn.ModuleList([_EGNNLayer(hidden) for _ in range(num_layers)])

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        mask = 1.0 - torch.eye(n, dtype=x.dtype, device=x.device).unsqueeze(-1)
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        tt = tt.reshape(-1, 1, 1, 1).expand(b, n, n, 1)
        h = self.h_init.to(x.dtype).expand(b, n, -1)
        y = x
        for layer in self.layers:
            h, y = layer(h, y, tt, mask)
        v = y - x
        return v - v.mean(1, keepdim=True)


def mean_free_log_normal(z: torch.Tensor) -> torch.Tensor:
    r"""Log-density of the standard normal on the centre-of-mass-free subspace
    $\{\sum_i z_i = 0\}$ of ``(batch, n, d)`` states, of dimension $(n-1)d$:
    $-\lVert z\rVert^2/2 - (n-1)d\log(2\pi)/2$ (``z`` is centred first)."""
    n, d = z.shape[1], z.shape[2]
    zc = z - z.mean(1, keepdim=True)
    return -0.5 * (zc * zc).sum((1, 2)) - 0.5 * (n - 1) * d * math.log(2 * math.pi)


class EquivariantCNF(CNF):
    r"""A continuous normalising flow for $n$ identical particles in $d$ dimensions whose
    density is invariant under rotations, reflections, translations and permutations
    (Koehler, Klein, Noe 2020).

    The base is the standard normal on the centre-of-mass-free subspace
    $U = \{x \in \mathbb R^{n\times d}: \sum_i x_i = 0\}$ (dimension $(n-1)d$), invariant
    under $O(d)$ and permutations, and the vector field (e.g. :class:`EGNNField`) is
    equivariant, maps into $U$ and depends only on differences $x_i - x_j$. Then the flow
    stays in $U$, the density it defines on $U$ is invariant (Koehler et al. 2020),
    and the trace of the field's Jacobian on $\mathbb R^{n\times d}$ equals its trace on $U$
    (the centre-of-mass directions are in its kernel and outside its range), so

    $$\log p(x) = \log\mathcal N_U(z(t_1)) + \int_{t_0}^{t_1}\operatorname{tr}
    \frac{\partial v}{\partial z}\,dt$$

    with the :class:`CNF` machinery. ``log_prob`` evaluates the density of the centred
    configuration $x - \bar x$ (the centre of mass is not modelled); ``sample`` returns
    centred configurations.

    Args:
        vector_field: an equivariant, translation-invariant, mean-free field ``v(t, x)`` on
            ``(batch, n, d)``, e.g. ``EGNNField(n, d)``.
        num_particles, dim: $n \ge 2$ and $d$.
        **kwargs: the keyword arguments of :class:`CNF`.

    Reference:
        J. Koehler, L. Klein, F. Noe, "Equivariant flows: exact likelihood generative
        learning for symmetric densities", ICML 2020.

        V. G. Satorras, E. Hoogeboom, F. B. Fuchs, I. Posner, M. Welling, "E(n) equivariant
        normalizing flows", NeurIPS 2021.
    """

    def __init__(
        self,
        vector_field: Any,
        num_particles: int,
        dim: int,
        *,
        trace: str = "exact",
        noise: str = "gaussian",
        regularisers: tuple[AbstractRegulariser, ...] | list[AbstractRegulariser] = (),
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        t0: float = 0.0,
        t1: float = 1.0,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 65536,
    ) -> None:
        _positive_int("EquivariantCNF", "num_particles", num_particles)
        _positive_int("EquivariantCNF", "dim", dim)
        if num_particles < 2:
            raise ValueError(
                f"EquivariantCNF: `num_particles` must be >= 2, got {num_particles!r}."
            )
        super().__init__(
            vector_field,
            (num_particles, dim),
            trace=trace,
            noise=noise,
            regularisers=regularisers,
            solver=solver,
            adjoint=adjoint,
            t0=t0,
            t1=t1,
            rtol=rtol,
            atol=atol,
            controller=controller,
            dt0=dt0,
            max_steps=max_steps,
        )
        self.num_particles, self.dim = num_particles, dim

    def log_prob(self, x: torch.Tensor, args: Any = None) -> torch.Tensor:
        """Log-density on the centre-of-mass-free subspace of each centred configuration of
        ``x`` (``(batch, n, d)``): ``(batch,)``. Sets ``self.regularisation``."""
        self._check(x)
        z, delta, regs = self.flow(x - x.mean(1, keepdim=True), args)
        self.regularisation = {k: v.mean() for k, v in regs.items()}
        return mean_free_log_normal(z) + delta

    def sample(
        self,
        n: int,
        args: Any = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` centred configurations ``(n, num_particles, dim)``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"EquivariantCNF.sample: `n` must be a positive int, got {n!r}.")
        p = next(iter(self.parameters()), None)
        dtype = dtype or (p.dtype if p is not None else torch.get_default_dtype())
        device = device or (p.device if p is not None else None)
        z = torch.randn((n, *self.event_shape), dtype=dtype, device=device, generator=generator)
        z = z - z.mean(1, keepdim=True)
        self.nfe = 0
        f = self._f(args)
        sol = self.config.solve(
            lambda t, y, a: f(t, y), self.t1, self.t0, z, tn.SaveAt(t1=True), args
        )
        self.last_stats = dict(sol.stats)
        return sol.ys[-1]
