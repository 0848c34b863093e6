r"""Physics-informed solvers: networks trained on the residual of an ODE system or PDE, with
the conditions built in (Lagaris, Likas, Fotiadis 1998; Raissi, Perdikaris, Karniadakis 2019;
neurodiffeq's interface, Chen, Sondak, Protopapas et al. 2020).

For unknowns $u_1, \dots, u_m$ of coordinates $x$ (one network each, wrapped by its
condition into a trial solution $\tilde u_i$), the residual function $R$ returns equations
$R_j(\tilde u, x) = 0$, and the training loss at collocation points $x_1, \dots, x_n$ is

$$\mathcal{L} = \frac{1}{n} \sum_{k=1}^n \sum_j R_j(\tilde u, x_k)^2
  \;+\; \lambda_{\text{data}} \frac{1}{|D|} \sum_{(x, y) \in D} \sum_i (\tilde u_i(x) - y_i)^2,$$

the second term only for inverse problems (observations $D$, learnable coefficients among
the residual's parameters). Residuals follow neurodiffeq's convention: ``pde_system(u_1, ...,
u_m, x_1, ..., x_d)`` returns a list of ``(n, 1)`` tensors, derivatives by
:func:`~torchnde.pinn.diff`.

Example (a damped oscillator as a first-order system)::

    from torchnde.pinn import IVP, Solver1D, diff

    solver = Solver1D(
        lambda x, v, t: [diff(x, t) - v, diff(v, t) + 0.2 * v + x],
        [IVP(0.0, 1.0), IVP(0.0, 0.0)],
        t_min=0.0, t_max=5.0,
    )
    solver.fit(max_epochs=2000)
    x, v = solver.get_solution()(torch.linspace(0, 5, 50))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .conditions import BaseCondition
from .generators import BaseGenerator, Generator1D, Generator2D, ResidualResampler

__all__ = ["FCNN", "Solution", "Solver", "Solver1D", "Solver2D"]

PDESystem = Callable[..., Sequence[torch.Tensor]]


class FCNN(nn.Module):
    """A fully connected network ``(n, n_input_units) -> (n, n_output_units)`` with ``actv``
    between the layers (neurodiffeq's default network: two hidden layers of 32, tanh)."""

    def __init__(
        self,
        n_input_units: int = 1,
        n_output_units: int = 1,
        hidden_units: Sequence[int] = (32, 32),
        actv: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        sizes = [n_input_units, *hidden_units, n_output_units]
        for name, v in (("n_input_units", n_input_units), ("n_output_units", n_output_units)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {v!r}.")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(actv())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _columns(coords: Sequence[Any], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = []
    for c in coords:
        t = torch.as_tensor(np.asarray(c) if not isinstance(c, torch.Tensor) else c)
        out.append(t.to(device=like.device, dtype=like.dtype).reshape(-1, 1))
    return tuple(out)


class Solution:
    """The trained solution as a callable: ``solution(*coords)`` returns the list of the
    unknowns at the points (each shape ``(n,)`` for coordinates of ``n`` values, any shape
    flattened), or one tensor when there is one unknown; ``to_numpy=True`` for arrays."""

    def __init__(self, conditions: Sequence[BaseCondition], nets: Sequence[nn.Module]) -> None:
        self.conditions = list(conditions)
        self.nets = list(nets)

    def __call__(self, *coords: Any, to_numpy: bool = False) -> Any:
        like = next(self.nets[0].parameters())
        cols = _columns(coords, like)
        out = [c.enforce(n, *cols).reshape(-1) for c, n in zip(self.conditions, self.nets)]
        if to_numpy:
            out = [o.detach().cpu().numpy() for o in out]  # type: ignore[misc]
        return out[0] if len(out) == 1 else out


class Solver(nn.Module):
    r"""A physics-informed solver on any domain the generators sample (module docstring).

    Args:
        pde_system: ``(u_1, ..., u_m, x_1, ..., x_d) -> [R_1, ...]``, each ``(n, 1)``.
        conditions: one condition per unknown (:class:`~torchnde.pinn.NoCondition` for none).
        train_generator: the collocation points of each step (a
            :class:`~torchnde.pinn.ResidualResampler` gets this solver's residual bound).
        valid_generator: points for the validation loss recorded by :meth:`fit` (default: none).
        nets: one network per unknown, ``(n, d) -> (n, 1)``; default :class:`FCNN` each.
        parameters: learnable coefficients of ``pde_system`` (inverse problems), trained with
            the networks.
        data: observations ``(coords, values)``: a tuple of ``d`` coordinate tensors and a tuple
            of ``m`` value tensors (``None`` for an unobserved unknown), all of ``n`` values.
        data_weight: $\lambda_{\text{data}}$.

    Raises:
        TypeError: a condition, generator or network of the wrong kind.
        ValueError: ``nets`` and ``conditions`` of different lengths; malformed ``data``.
    """

    def __init__(
        self,
        pde_system: PDESystem,
        conditions: Sequence[BaseCondition],
        train_generator: BaseGenerator,
        valid_generator: BaseGenerator | None = None,
        nets: Sequence[nn.Module] | None = None,
        parameters: Iterable[nn.Parameter] = (),
        data: tuple[Sequence[Any], Sequence[Any]] | None = None,
        data_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not callable(pde_system):
            raise TypeError(
                f"`pde_system` must be a function (*unknowns, *coords) -> list of residuals, "
                f"got {type(pde_system).__name__}."
            )
        conditions = list(conditions)
        if not conditions:
            raise ValueError("`conditions` must list one condition per unknown, got none.")
        for i, c in enumerate(conditions):
            if not isinstance(c, BaseCondition):
                raise TypeError(
                    f"`conditions[{i}]` must be a condition (IVP, DirichletBVP, ..., "
                    f"NoCondition), got {type(c).__name__}."
                )
        for name, g in (("train_generator", train_generator), ("valid_generator", valid_generator)):
            if g is not None and not isinstance(g, BaseGenerator):
                raise TypeError(f"`{name}` must be a generator, got {type(g).__name__}.")
        self.pde_system = pde_system
        self.conditions = conditions
        self.train_generator = train_generator
        self.valid_generator = valid_generator
        # A resampler cannot draw before its residual is bound: count its pool's coordinates.
        probe = (
            train_generator.pool
            if isinstance(train_generator, ResidualResampler)
            else train_generator
        )
        num_coords = len(probe.get_examples())
        if nets is None:
            nets = [FCNN(num_coords, 1) for _ in conditions]
        nets = list(nets)
        if len(nets) != len(conditions):
            raise ValueError(
                f"`nets` must have one network per condition: got {len(nets)} networks for "
                f"{len(conditions)} conditions."
            )
        for i, n in enumerate(nets):
            if not isinstance(n, nn.Module):
                raise TypeError(f"`nets[{i}]` must be an nn.Module, got {type(n).__name__}.")
        self.nets = nn.ModuleList(nets)
        self.coefficients = nn.ParameterList(list(parameters))
        self.data_weight = float(data_weight)
        self.data: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None
        if data is not None:
            if not (isinstance(data, (tuple, list)) and len(data) == 2):
                raise ValueError("`data` must be a pair (coords, values).")
            coords, values = tuple(data[0]), tuple(data[1])
            if len(coords) != num_coords or len(values) != len(conditions):
                raise ValueError(
                    f"`data` must hold {num_coords} coordinate tensors and {len(conditions)} "
                    f"value tensors (None where unobserved), got {len(coords)} and {len(values)}."
                )
            self.data = (coords, values)
        if isinstance(train_generator, ResidualResampler):
            train_generator.bind(self.point_residual)
        self.metrics_history: dict[str, list[float]] = {"train_loss": [], "valid_loss": []}

    def _like(self) -> torch.Tensor:
        return next(self.nets.parameters())

    def trial(self, *coords: torch.Tensor) -> list[torch.Tensor]:
        """The trial solutions at ``coords`` (each ``(n, 1)``): a list of ``(n, 1)``."""
        return [c.enforce(n, *coords) for c, n in zip(self.conditions, self.nets)]

    def residuals(self, *coords: torch.Tensor) -> list[torch.Tensor]:
        """The equations' residuals at ``coords`` (moved to the networks' device and dtype,
        with gradients on): a list of ``(n, 1)`` tensors."""
        cols = tuple(c.detach().requires_grad_(True) for c in _columns(coords, self._like()))
        res = self.pde_system(*self.trial(*cols), *cols)
        return [r.reshape(-1, 1) for r in res]

    def point_residual(self, *coords: torch.Tensor) -> torch.Tensor:
        """$\\sum_j R_j^2$ at each point, shape ``(n,)``."""
        return torch.cat(self.residuals(*coords), dim=1).pow(2).sum(1)

    def data_loss(self) -> torch.Tensor:
        """The mean squared misfit to the observations (0 without ``data``)."""
        if self.data is None:
            return self._like().new_zeros(())
        coords, values = self.data
        cols = _columns(coords, self._like())
        total = self._like().new_zeros(())
        for cond, net, y in zip(self.conditions, self.nets, values):
            if y is not None:
                yt = _columns([y], self._like())[0]
                total = total + (cond.enforce(net, *cols) - yt).pow(2).mean()
        return total

    def loss(self, coords: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The training loss at ``coords`` (default: a fresh draw of the train generator)."""
        coords = self.train_generator.get_examples() if coords is None else coords
        loss = self.point_residual(*coords).mean()
        if self.data is not None:
            loss = loss + self.data_weight * self.data_loss()
        return loss

    def train_step(self, optimizer: torch.optim.Optimizer) -> float:
        """One optimizer step on a fresh draw of collocation points; returns the loss."""
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def fit(
        self,
        max_epochs: int,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-3,
        callbacks: Sequence[Callable[[Solver, int], None]] = (),
        valid_every: int = 1,
    ) -> Solver:
        """Train for ``max_epochs`` steps (one fresh batch each) with ``optimizer`` (default
        Adam at ``lr`` over the networks and coefficients); records ``train_loss`` and, with a
        ``valid_generator``, ``valid_loss`` every ``valid_every`` epochs (0: never) in
        ``metrics_history``. ``callbacks`` are called as ``callback(solver, epoch)`` after
        each epoch."""
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 0:
            raise ValueError(f"`max_epochs` must be an int >= 0, got {max_epochs!r}.")
        if isinstance(valid_every, bool) or not isinstance(valid_every, int) or valid_every < 0:
            raise ValueError(f"`valid_every` must be an int >= 0, got {valid_every!r}.")
        opt = optimizer or torch.optim.Adam(self.parameters(), lr=lr)
        for epoch in range(max_epochs):
            loss = self.train_step(opt)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss is {loss} at epoch {epoch}; lower `lr` or rescale the "
                    "problem."
                )
            self.metrics_history["train_loss"].append(loss)
            if self.valid_generator is not None and valid_every and epoch % valid_every == 0:
                valid = self.loss(self.valid_generator.get_examples())
                self.metrics_history["valid_loss"].append(float(valid.detach()))
            for cb in callbacks:
                cb(self, epoch)
        return self

    def get_solution(self, copy_nets: bool = True) -> Solution:
        """The solution as a callable (:class:`Solution`), on copies of the networks unless
        ``copy_nets=False``."""
        nets = [copy.deepcopy(n) for n in self.nets] if copy_nets else list(self.nets)
        return Solution(self.conditions, nets)

    def trial_function(self, index: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
        """Unknown ``index`` as a function of one point ``(d,) -> ()``, for ``torch.func``
        transforms (:func:`~torchnde.pinn.derivatives`)."""
        cond, net = self.conditions[index], self.nets[index]

        def fn(p: torch.Tensor) -> torch.Tensor:
            cols = p.reshape(1, -1).split(1, dim=1)
            return cond.enforce(net, *cols).reshape(())

        return fn


class Solver1D(Solver):
    """:class:`Solver` for ODE systems on ``[t_min, t_max]``; default generators: 32
    equally spaced noisy points for training, 32 equally spaced for validation."""

    def __init__(
        self,
        ode_system: PDESystem,
        conditions: Sequence[BaseCondition],
        t_min: float,
        t_max: float,
        nets: Sequence[nn.Module] | None = None,
        train_generator: BaseGenerator | None = None,
        valid_generator: BaseGenerator | None = None,
        **kwargs: Any,
    ) -> None:
        train = train_generator or Generator1D(32, t_min, t_max, "equally-spaced-noisy")
        valid = valid_generator or Generator1D(32, t_min, t_max, "equally-spaced")
        super().__init__(ode_system, conditions, train, valid, nets, **kwargs)


class Solver2D(Solver):
    """:class:`Solver` for PDEs on a rectangle ``xy_min`` to ``xy_max`` (also space-time, with
    ``(x, t)``); default generators: a 32 x 32 noisy grid for training, the plain grid for
    validation."""

    def __init__(
        self,
        pde_system: PDESystem,
        conditions: Sequence[BaseCondition],
        xy_min: tuple[float, float],
        xy_max: tuple[float, float],
        nets: Sequence[nn.Module] | None = None,
        train_generator: BaseGenerator | None = None,
        valid_generator: BaseGenerator | None = None,
        **kwargs: Any,
    ) -> None:
        train = train_generator or Generator2D((32, 32), xy_min, xy_max, "equally-spaced-noisy")
        valid = valid_generator or Generator2D((32, 32), xy_min, xy_max, "equally-spaced")
        super().__init__(pde_system, conditions, train, valid, nets, **kwargs)
