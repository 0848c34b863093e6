r"""GRU-ODE-Bayes: a continuous GRU between observations, a Bayesian GRU update at them."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import torchnde as tn

from ._config import describe
from .grud import forward_sequence

__all__ = ["GRUODE", "GRUODEBayes"]


class GRUODE(nn.Module):
    r"""The GRU-ODE vector field: the continuous-time limit of a GRU without input,

    $$ \frac{dh}{dt} = (1 - z) \odot (g - h), \quad z = \sigma(W_z h + b_z), \quad
       r = \sigma(W_r h + b_r), \quad g = \tanh(W_h (r \odot h) + b_h). $$

    $h$ stays in $[-1, 1]$ when it starts there (the flow moves it towards $g$), and the
    time constants are at least one time unit.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.gates = nn.Linear(hidden_size, 2 * hidden_size)
        self.candidate = nn.Linear(hidden_size, hidden_size)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(h)).chunk(2, dim=-1)
        g = torch.tanh(self.candidate(r * h))
        return (1 - z) * (g - h)


class GRUODEBayes(nn.Module):
    r"""GRU-ODE-Bayes (De Brouwer, Simm, Arany, Moreau 2019) for sporadically observed
    multivariate series.

    Between observations the hidden state follows the :class:`GRUODE`; it defines a Gaussian
    observation model $p(x_t \mid h_t) = \mathcal N(\mu(h_t), \mathrm{diag}\,\sigma^2(h_t))$.
    At an observation with values $x$ and mask $m$ the *GRU-Bayes* update
    $h \leftarrow \mathrm{GRUCell}(u, h)$ takes, for every channel $d$,
    $u_d = m_d\,\mathrm{ReLU}(W_d [x_d, \mu_d, \log\sigma^2_d, (x_d - \mu_d)/\sigma_d] + b_d)$:
    only the observed channels enter, each through its own weights. Samples with nothing
    observed at a step are left unchanged.

    The loss of the paper is the negative log-likelihood of each observation under the
    prediction before the update, ``self.nll`` after a call, plus ``mixing`` times the KL
    divergence from $\mathcal N(x, \sigma_{\text{obs}}^2)$ to the prediction after the update
    (``self.kl``); :meth:`loss` combines them.

    Times are per sample, ``(batch, length)``: each sample's state is carried between its own
    observation times by the solve of $dh/ds = \Delta t\, f(h)$ on $s \in [0, 1]$ (one solve
    for the batch, whatever the gaps). A shorter series is padded by repeating its last time
    with mask 0, which leaves its state unchanged.

    Args:
        input_size: channels $D$.
        hidden_size: size of $h$.
        prep_size: width of each channel's input to the GRU-Bayes cell.
        width: width of the observation model's hidden layer.
        mixing: weight of the post-update KL in :meth:`loss`.
        obs_std: $\sigma_{\text{obs}}$ of that KL.
        solver: the solver of the GRU-ODE (``RK4()`` by default).
        num_steps: steps per interval between observations for a fixed-step solver.
        rtol, atol: tolerances for an adaptive solver.
        adjoint: how to differentiate the solves.

    ``forward(ts, x, mask)`` returns ``(h_final (batch, hidden), hs (batch, length,
    hidden))``, ``hs[:, i]`` the state just after observation ``i``.

    Reference:
        E. De Brouwer, J. Simm, A. Arany, Y. Moreau, "GRU-ODE-Bayes: continuous modeling of
        sporadically-observed time series", NeurIPS 2019.

    Example:
        >>> model = GRUODEBayes(input_size=2, hidden_size=32)
        >>> h, hs = model(ts, x, mask)
        >>> model.loss().backward()
        >>> mean, var = model.forecast(h, ts[:, -1], t_future)   # (batch, F, 2) each
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        prep_size: int = 4,
        width: int = 32,
        mixing: float = 1e-4,
        obs_std: float = 1e-2,
        solver: tn.AbstractSolver | None = None,
        num_steps: int = 2,
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: tn.AbstractAdjoint | None = None,
    ) -> None:
        super().__init__()
        for name, v in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("prep_size", prep_size),
            ("width", width),
            ("num_steps", num_steps),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GRUODEBayes: `{name}` must be an int >= 1, got {v!r}.")
        if not (isinstance(obs_std, (int, float)) and obs_std > 0):
            raise ValueError(f"GRUODEBayes: `obs_std` must be positive, got {obs_std!r}.")
        if solver is None:
            solver = tn.RK4()
        if not isinstance(solver, tn.AbstractSolver):
            raise TypeError(
                f"GRUODEBayes: `solver` must be a torchnde solver such as torchnde.RK4(), got "
                f"{describe(solver)}."
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.ode = GRUODE(hidden_size)
        self.observation = nn.Sequential(
            nn.Linear(hidden_size, width), nn.ReLU(), nn.Linear(width, 2 * input_size)
        )
        bound = 1 / math.sqrt(4)
        self.prep_weight = nn.Parameter(
            torch.empty(input_size, 4, prep_size).uniform_(-bound, bound)
        )
        self.prep_bias = nn.Parameter(torch.zeros(input_size, prep_size))
        self.cell = nn.GRUCell(input_size * prep_size, hidden_size)
        self.mixing, self.obs_std = float(mixing), float(obs_std)
        self.solver, self.num_steps = solver, num_steps
        self.rtol, self.atol = rtol, atol
        self.adjoint = adjoint if adjoint is not None else tn.DirectAdjoint()
        self.nfe = 0
        self.nll = torch.zeros(())
        self.kl = torch.zeros(())
        self.num_observed = torch.zeros(())

    def predict(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The observation model: mean and log-variance ``(..., input_size)`` each."""
        mean, logvar = self.observation(h).chunk(2, dim=-1)
        return mean, logvar

    def _evolve(self, h: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
        """Carry ``h`` over per-sample time gaps ``gap`` ``(batch,)``."""
        if not bool((gap > 0).any()):
            return h
        ode = self.ode

        def f(s: torch.Tensor, y: torch.Tensor, args: Any) -> torch.Tensor:
            self.nfe += 1
            return args * ode(s, y)

        if self.solver.is_adaptive:
            controller: Any = tn.PIDController(
                rtol=self.rtol, atol=self.atol, differentiate_steps=False
            )
            dt0 = None
        else:
            controller, dt0 = tn.ConstantStepSize(), 1.0 / self.num_steps
        sol = tn.solve(
            tn.ODETerm(f),
            self.solver,
            0.0,
            1.0,
            h,
            gap[:, None].to(h.dtype),
            dt0=dt0,
            controller=controller,
            adjoint=self.adjoint,
        )
        return sol.ys[-1]

    def _bayes(
        self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRU-Bayes update and the per-sample NLL of the observed entries before it."""
        mean, logvar = self.predict(h)
        std = torch.exp(0.5 * logvar)
        err = (x - mean) / std
        nll = 0.5 * (math.log(2 * math.pi) + logvar + err**2)
        feats = torch.stack([x, mean, logvar, err], dim=-1)  # (batch, D, 4)
        u = torch.relu(torch.einsum("bdk,dkp->bdp", feats, self.prep_weight) + self.prep_bias)
        u = (u * m.unsqueeze(-1)).flatten(1)
        h_new = self.cell(u, h)
        seen = m.sum(-1, keepdim=True) > 0
        return torch.where(seen, h_new, h), (nll * m).sum(-1)

    def _kl(self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        r"""$\mathrm{KL}(\mathcal N(x, \sigma_{obs}^2) \,\|\, p(\cdot \mid h))$ per sample, over
        the observed entries."""
        mean, logvar = self.predict(h)
        var, v_obs = torch.exp(logvar), self.obs_std**2
        kl = 0.5 * (logvar - math.log(v_obs) + (v_obs + (x - mean) ** 2) / var - 1)
        return (kl * m).sum(-1)

    def forward(
        self, ts: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Filter the series.

        Args:
            ts: observation times ``(length,)`` or ``(batch, length)``, non-decreasing.
            x: values ``(batch, length, input_size)`` (anything, NaN too, where ``mask`` is 0).
            mask: 1 where observed (default: everything observed).

        Returns:
            ``(h_final, hs)``: ``(batch, hidden)`` and ``(batch, length, hidden)``. After the
            call ``self.nll``, ``self.kl`` and ``self.num_observed`` hold per-sample sums.
        """
        ts, x, m = forward_sequence("GRUODEBayes", ts, x, mask, self.input_size)
        batch, length, _ = x.shape
        h = x.new_zeros(batch, self.hidden_size)
        nll, kl = x.new_zeros(batch), x.new_zeros(batch)
        self.nfe = 0
        hs = []
        for i in range(length):
            if i > 0:
                h = self._evolve(h, ts[:, i] - ts[:, i - 1])
            h, n = self._bayes(h, x[:, i], m[:, i])
            nll = nll + n
            if self.mixing:
                kl = kl + self._kl(h, x[:, i], m[:, i])
            hs.append(h)
        self.nll, self.kl, self.num_observed = nll, kl, m.sum((1, 2))
        return h, torch.stack(hs, dim=1)

    def loss(self) -> torch.Tensor:
        """The training loss of the last call: (NLL + mixing * KL) per observed entry."""
        total = self.nll.sum() + self.mixing * self.kl.sum()
        return total / self.num_observed.sum().clamp_min(1)

    def forecast(
        self, h: torch.Tensor, t0: torch.Tensor | float, t_future: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict at ``t_future`` (``(F,)`` or ``(batch, F)``, after ``t0``) from the state
        ``h`` at ``t0`` (``()`` or ``(batch,)``), with no more observations: mean and
        variance ``(batch, F, input_size)`` each."""
        batch = h.shape[0]
        t_future = torch.as_tensor(t_future, dtype=h.dtype, device=h.device)
        t_future = t_future.expand(batch, t_future.shape[-1])
        t0 = torch.as_tensor(t0, dtype=h.dtype, device=h.device).expand(batch)
        times = torch.cat([t0[:, None], t_future], dim=1)
        if bool((times.diff(dim=1) < 0).any()):
            raise ValueError(
                "GRUODEBayes.forecast: `t_future` must be non-decreasing and not before `t0`, "
                f"got t0={describe(t0)}, t_future={describe(t_future)}."
            )
        means, variances = [], []
        for i in range(t_future.shape[1]):
            h = self._evolve(h, times[:, i + 1] - times[:, i])
            mean, logvar = self.predict(h)
            means.append(mean)
            variances.append(torch.exp(logvar))
        return torch.stack(means, dim=1), torch.stack(variances, dim=1)
