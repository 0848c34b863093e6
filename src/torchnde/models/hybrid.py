r"""Neural hybrid automata: learned modes, guards, transitions and resets, in one solve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

import torchnde as tn

from ._config import describe

__all__ = ["HybridTrajectory", "NeuralHybridAutomaton"]


class HybridTrajectory(NamedTuple):
    """What :class:`NeuralHybridAutomaton` returns.

    Attributes:
        xs: the continuous state at the save times, time first: ``(len(ts), batch, dim)``.
        modes: the mode at the save times, ``(len(ts), batch)`` int64 (at a save time exactly
            on a switch, the mode before it).
        switch_ts: the switching times of each sample, in order: ``(batch, k)``, NaN after a
            sample's last switch. Differentiable (they move with the guards, the flows and
            the initial state).
        switch_from: the mode left at each switch, ``(batch, k)`` int64, -1 padding.
        solution: the underlying :class:`torchnde.Solution` (state ``[x, one-hot mode]``).
    """

    xs: torch.Tensor
    modes: torch.Tensor
    switch_ts: torch.Tensor
    switch_from: torch.Tensor
    solution: tn.Solution


def _modules(owner: str, name: str, items: Any, allow_none: bool = False) -> list[Any]:
    if isinstance(items, nn.Module) or callable(items) or not isinstance(items, Sequence):
        raise TypeError(
            f"{owner}: `{name}` must be a sequence with one module per mode, got {describe(items)}."
        )
    out = list(items)
    for i, m in enumerate(out):
        if m is None and allow_none:
            continue
        if isinstance(m, nn.Sequential):
            raise TypeError(
                f"{owner}: `{name}[{i}]` is an nn.Sequential, which takes x only, but it is "
                "called as f(t, x); wrap it in torchnde.models.Autonomous(net)."
            )
        if not callable(m):
            raise TypeError(
                f"{owner}: `{name}[{i}]` must be a module or callable f(t, x), got {describe(m)}."
            )
    return out


class NeuralHybridAutomaton(nn.Module):
    r"""A hybrid automaton whose modes, guards, transitions and resets are networks
    (in the spirit of Neural Hybrid Automata, Poli et al. 2021), solved in one adaptive solve
    with non-terminal events.

    The automaton has $K$ modes. In mode $k$ the continuous state $x \in \mathbb{R}^d$ flows
    along $\dot x = f_k(t, x)$ until the guard $g_k(t, x)$ (positive inside the mode) crosses
    zero downwards; there the automaton jumps to the mode
    $j = \arg\max_i \ell_{k}(t, x)_i$ chosen by the transition logits and the state is reset
    to $x^+ = r_k(t, x^-)$ (the identity where no reset is given). The mode travels in the
    solve's state as a one-hot vector $m$, $z = [x, m]$, $\dot z = [\sum_k m_k f_k(t, x), 0]$,
    and the $K$ event functions are $m_k\, g_k(t, x) + 1 - m_k$: the guard in mode $k$, one
    elsewhere, so only the current mode's guard can fire, and the event record
    (``switch_from``) says which mode was left.

    Gradients reach every part: the flows and the initial state through the solution, the
    guards through the switching times (implicit function theorem at each crossing), the
    resets through the state after each switch, and the transition logits through a
    straight-through one-hot (the forward pass uses the hard choice; the backward pass the
    softmax's derivative).

    Every sample is its own automaton (its own switches), so the default controller steps
    per sample; a controller passed in must have ``per_sample=True``.

    Args:
        flows: the mode vector fields $f_k(t, x)$, one per mode, each returning ``(batch, d)``.
        guards: the guards $g_k(t, x)$, one per mode, each returning ``(batch,)`` or
            ``(batch, 1)``; the automaton leaves mode $k$ where $g_k$ crosses zero from above.
        resets: the reset maps $r_k(t, x)$ applied when leaving mode $k$ (``None``: none, the
            identity), one per mode; ``None`` for no resets at all.
        transitions: the next-mode logits: a module $\ell(t, x, m)$ returning ``(batch, K)``
            (``m`` the one-hot current mode), or ``None`` for a learned $K \times K$ table
            ``transition_logits`` (row $k$: the logits of leaving mode $k$), initialised to
            go from mode $k$ to mode $k + 1 \bmod K$ (a toggle for two modes).
        solver: a torchnde solver (``Tsit5()`` by default).
        adjoint: how to differentiate the solve (``DirectAdjoint()`` by default;
            ``CheckpointAdjoint()`` for long runs).
        rtol, atol: tolerances of the default per-sample ``PIDController``; or ``controller=``.
        max_events: the most switches per sample (protection against Zeno behaviour: the
            sample's solve then stops with ``Status.MAX_EVENTS_REACHED``).
        max_steps: step budget of one solve.

    References:
        M. Poli, S. Massaroli, L. Scimeca, S. Chun, S. J. Oh, A. Yamashita, H. Asama, J. Park,
        A. Garg, "Neural hybrid automata: learning dynamics with multiple modes and stochastic
        transitions", NeurIPS 2021.

    Example:
        >>> lin = lambda: nn.Linear(1, 1)
        >>> nha = NeuralHybridAutomaton(
        ...     flows=[Autonomous(lin()), Autonomous(lin())],
        ...     guards=[Autonomous(lin()), Autonomous(lin())],
        ... )
        >>> out = nha(torch.ones(4, 1), torch.linspace(0, 1, 5), mode0=torch.zeros(4).long())
        >>> out.xs.shape, out.modes.shape
        (torch.Size([5, 4, 1]), torch.Size([5, 4]))
    """

    def __init__(
        self,
        flows: Sequence[Any],
        guards: Sequence[Any],
        resets: Sequence[Any] | None = None,
        transitions: Any = None,
        *,
        solver: tn.AbstractSolver | None = None,
        adjoint: tn.AbstractAdjoint | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        controller: tn.AbstractStepSizeController | None = None,
        max_events: int = 100,
        max_steps: int = 65536,
    ) -> None:
        super().__init__()
        owner = "NeuralHybridAutomaton"
        flow_list = _modules(owner, "flows", flows)
        guard_list = _modules(owner, "guards", guards)
        k = len(flow_list)
        if k == 0:
            raise ValueError(f"{owner}: `flows` must have at least one mode, got none.")
        if len(guard_list) != k:
            raise ValueError(
                f"{owner}: `guards` must have one guard per mode ({k} flows), got "
                f"{len(guard_list)}."
            )
        reset_list = [None] * k if resets is None else _modules(owner, "resets", resets, True)
        if len(reset_list) != k:
            raise ValueError(
                f"{owner}: `resets` must have one entry per mode ({k} flows; None for the "
                f"identity), got {len(reset_list)}."
            )
        if transitions is not None and not callable(transitions):
            raise TypeError(
                f"{owner}: `transitions` must be a module l(t, x, m) returning next-mode "
                f"logits (batch, {k}), or None for a learned table, got {describe(transitions)}."
            )
        if controller is None:
            controller = tn.PIDController(
                rtol=1e-4 if rtol is None else rtol,
                atol=1e-6 if atol is None else atol,
                per_sample=True,
            )
        elif rtol is not None or atol is not None:
            raise ValueError(
                f"{owner}: pass either `rtol`/`atol` or `controller`, not both (got rtol={rtol!r}, "
                f"atol={atol!r}); put the tolerances into the controller."
            )
        if not isinstance(controller, tn.AbstractStepSizeController):
            raise TypeError(
                f"{owner}: `controller` must be a step-size controller, got {describe(controller)}."
            )
        if not controller.per_sample:
            raise ValueError(
                f"{owner}: `controller` must step per sample (each sample switches on its own), "
                f"got {controller!r}; pass per_sample=True."
            )
        solver = tn.Tsit5() if solver is None else solver
        if not isinstance(solver, tn.AbstractSolver) or not solver.is_adaptive:
            raise TypeError(
                f"{owner}: `solver` must be an adaptive torchnde solver such as "
                f"torchnde.Tsit5(), got {describe(solver)}."
            )
        self.flows = nn.ModuleList([m for m in flow_list if isinstance(m, nn.Module)])
        self.guards = nn.ModuleList([m for m in guard_list if isinstance(m, nn.Module)])
        self.resets = nn.ModuleList([m for m in reset_list if isinstance(m, nn.Module)])
        self._flows, self._guards, self._resets = flow_list, guard_list, reset_list
        self.transitions = transitions
        self.num_modes = k
        if transitions is None:
            logits = torch.full((k, k), -2.0)
            logits[torch.arange(k), (torch.arange(k) + 1) % k] = 2.0
            self.transition_logits = nn.Parameter(logits)
        self.solver, self.adjoint, self.controller = solver, adjoint, controller
        self.max_events, self.max_steps = max_events, max_steps

    # The automaton in the solve's state z = [x, one-hot mode].

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z[:, : -self.num_modes], z[:, -self.num_modes :]

    def _vector_field(self, t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
        x, m = self._split(z)
        dx = sum(m[:, k : k + 1] * f(t, x) for k, f in enumerate(self._flows))
        return torch.cat([dx, torch.zeros_like(m)], dim=1)

    def _guard(self, k: int) -> Any:
        g = self._guards[k]

        def fn(t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
            x, m = self._split(z)
            # Outside mode k the function is 1, so it cannot cross zero there; entering mode k
            # the loop reads it again after the reset.
            return m[:, k] * g(t, x).reshape(x.shape[0]) + (1 - m[:, k])

        return fn

    def _next_mode(self, t: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.transitions is None:
            logits = m @ self.transition_logits
        else:
            logits = self.transitions(t, x, m)
        soft = torch.softmax(logits, dim=-1)
        hard = nn.functional.one_hot(soft.argmax(-1), self.num_modes).to(soft.dtype)
        return hard + soft - soft.detach()  # straight-through: hard forward, soft backward

    def _jump(self, k: int) -> Any:
        r = self._resets[k]

        def reset(t: torch.Tensor, z: torch.Tensor, args: Any) -> torch.Tensor:
            x, m = self._split(z)
            x_new = x if r is None else r(t, x)
            return torch.cat([x_new, self._next_mode(t, x, m)], dim=1)

        return reset

    def forward(
        self,
        x0: torch.Tensor,
        ts: torch.Tensor,
        mode0: torch.Tensor,
    ) -> HybridTrajectory:
        """Run the automaton from ``x0`` (``(batch, d)``) in the modes ``mode0`` (``(batch,)``
        int64) and save it at the times ``ts`` (1-d, increasing, ``ts[0]`` the start).

        Returns:
            a :class:`HybridTrajectory`: ``xs`` ``(len(ts), batch, d)`` and ``modes``
            ``(len(ts), batch)``, time first, and the switching record.
        """
        owner = "NeuralHybridAutomaton"
        if not isinstance(x0, torch.Tensor) or x0.ndim != 2 or not x0.is_floating_point():
            raise ValueError(
                f"{owner}: `x0` must be a floating-point tensor (batch, dim), got {describe(x0)}."
            )
        if not isinstance(ts, torch.Tensor) or ts.ndim != 1 or len(ts) < 2:
            raise ValueError(
                f"{owner}: `ts` must be a 1-d tensor of at least two save times, got "
                f"{describe(ts)}."
            )
        if (
            not isinstance(mode0, torch.Tensor)
            or mode0.shape != x0.shape[:1]
            or mode0.dtype not in (torch.int32, torch.int64)
        ):
            raise ValueError(
                f"{owner}: `mode0` must be an int64 tensor of shape ({x0.shape[0]},), one mode "
                f"per sample, got {describe(mode0)}."
            )
        if len(mode0) and (int(mode0.min()) < 0 or int(mode0.max()) >= self.num_modes):
            raise ValueError(
                f"{owner}: `mode0` must hold modes 0 .. {self.num_modes - 1}, got values in "
                f"[{int(mode0.min())}, {int(mode0.max())}]."
            )
        k = self.num_modes
        m0 = nn.functional.one_hot(mode0.long(), k).to(x0.dtype)
        event = tn.Event(
            [self._guard(i) for i in range(k)],
            direction=-1,
            terminal=False,
            reset=[self._jump(i) for i in range(k)],
            max_events=self.max_events,
        )
        sol = tn.solve(
            tn.ODETerm(self._vector_field),
            self.solver,
            ts[0],
            ts[-1],
            torch.cat([x0, m0], dim=1),
            saveat=tn.SaveAt(ts=ts),
            controller=self.controller,
            adjoint=self.adjoint,
            event=event,
            max_steps=self.max_steps,
        )
        xs, ms = sol.ys[..., :-k], sol.ys[..., -k:]
        assert sol.event_ts is not None and sol.event_ids is not None
        return HybridTrajectory(xs, ms.argmax(-1), sol.event_ts, sol.event_ids, sol)
