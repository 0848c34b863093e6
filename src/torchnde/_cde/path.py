"""What every interpolated path shares: knots, locating a time on them, sides at the knots."""

from __future__ import annotations

import bisect

import torch

from .._core.terms import AbstractPath
from ._checks import describe
from .interval import check_within

__all__ = ["AbstractInterpolation"]


class AbstractInterpolation(AbstractPath):
    """A piecewise-polynomial path through a time series, defined by coefficients on knots.

    Subclasses store per-segment coefficients of shape ``(..., segments, k)`` and implement
    ``_value(seg, s)`` and ``_slope(seg, s)`` for the coefficient rows ``seg`` (shape
    ``(..., k)``) and the offset ``s`` from the segment's start.

    Times passed to :meth:`evaluate` and :meth:`derivative` are either 0-d (one time for the
    whole batch) or of shape :attr:`batch_shape` (one time per sample, as a per-sample solve
    passes them). They must lie in the path's interval, the first to the last observation
    time (of each sample, for per-sample times), up to round-off: outside it is a
    ``ValueError``, unless the path was built with ``extrapolate=True``, which extends the
    first and last pieces.

    At a knot the derivative of a path that is not continuously differentiable (linear
    interpolation) takes the left limit with ``side="left"`` (the default, what a forward-in-time
    step ending on the knot needs) and the right limit with ``side="right"``.
    """

    #: whether dX/dt is continuous (cubic paths); if not, a solver must step to every knot and
    #: restart there (the knots become the controller's ``jump_ts``).
    continuous_derivative: bool = False

    #: whether times outside the interval extend the first and last pieces (else they raise).
    extrapolate: bool = False

    def __init__(self, t: torch.Tensor, coeffs: torch.Tensor, extrapolate: bool = False) -> None:
        if not isinstance(extrapolate, bool):
            raise TypeError(
                f"{type(self).__name__}: `extrapolate` must be True or False, got "
                f"{describe(extrapolate)}."
            )
        self.extrapolate = extrapolate
        self._t = t
        self._tsearch = t.detach().contiguous()
        # Shared knots on the CPU: a 0-d time is searched on the host (`_locate_on_host`),
        # in the knots as floats, listed on first use.
        self._host_search = self._tsearch.ndim == 1 and self._tsearch.is_cpu
        self._host_knots: list[float] | None = None
        self.batch_shape = coeffs.shape[:-2]
        self.num_segments = coeffs.shape[-2]
        if t.shape[-1] != self.num_segments + 1:
            raise ValueError(
                f"{type(self).__name__}: `t` has {t.shape[-1]} times but the coefficients "
                f"describe {self.num_segments} segments (shape {tuple(coeffs.shape)}); pass the "
                "same `t` as to the coefficient function."
            )
        if t.ndim > 1 and t.shape[:-1] != self.batch_shape:
            raise ValueError(
                f"{type(self).__name__}: per-sample `t` of shape {tuple(t.shape)} must have the "
                f"batch shape {tuple(self.batch_shape)} of the coefficients."
            )

    # -- knots ----------------------------------------------------------------------------
    @property
    def grid_points(self) -> torch.Tensor:
        """The observation times, shape ``(length,)`` (or ``(..., length)`` per sample)."""
        return self._t

    @property
    def knots(self) -> torch.Tensor:
        """Every knot as one sorted 1-D tensor (the union over samples for per-sample times):
        what a step-size controller should step to (``step_ts``/``jump_ts``)."""
        if self._t.ndim == 1:
            return self._tsearch
        return torch.unique(self._tsearch.reshape(-1))

    @property
    def interval(self) -> torch.Tensor:
        """``[first time, last time]``: where the path is defined (for per-sample times, where
        every sample is: the latest first time to the earliest last time)."""
        return torch.stack([self._tsearch[..., 0].max(), self._tsearch[..., -1].min()])

    def check_times(self, t0: torch.Tensor, t1: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``[t0, t1]`` (either order, 0-d or per sample) lies in
        the interval: what ``solve`` calls once for a term on this path."""
        check_within(self, t0, who="solve", what="`t0`")
        check_within(self, t1, who="solve", what="`t1`")

    # -- locating a time ------------------------------------------------------------------
    def _locate(self, t: torch.Tensor, side: str) -> tuple[torch.Tensor | int, torch.Tensor]:
        """Segment index and offset ``t - t_index``, each of shape ``t.shape`` (0-d) or the
        batch shape (per sample). The index is a Python ``int`` for a 0-d time on the CPU
        with shared knots (see :meth:`_locate_on_host`)."""
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=self._t.dtype, device=self._t.device)
        knots = self._tsearch
        right = side == "right"
        if self._host_search and t.ndim == 0 and t.is_cpu:
            found = self._locate_on_host(t, right)
            if found is not None:
                return found
        if knots.ndim == 1:
            if t.ndim != 0 and t.shape != self.batch_shape:
                raise ValueError(
                    f"{type(self).__name__}: `t` must be 0-d or have the batch shape "
                    f"{tuple(self.batch_shape)} (one time per sample), got {describe(t)}."
                )
            tq = t.detach().to(knots.dtype)
            idx = torch.searchsorted(knots, tq, right=right) - 1
            idx = idx.clamp(0, self.num_segments - 1)
            start = self._t[idx]
        else:
            if t.ndim != 0 and t.shape != self.batch_shape:
                raise ValueError(
                    f"{type(self).__name__}: `t` must be 0-d or have the batch shape "
                    f"{tuple(self.batch_shape)} (one time per sample), got {describe(t)}."
                )
            tq = t.detach().to(knots.dtype).expand(self.batch_shape).unsqueeze(-1)
            idx = torch.searchsorted(knots, tq.contiguous(), right=right) - 1
            idx = idx.clamp(0, self.num_segments - 1)
            start = self._t.gather(-1, idx).squeeze(-1)
            idx = idx.squeeze(-1)
        return idx, t.to(self._t.dtype) - start

    def _locate_on_host(self, t: torch.Tensor, right: bool) -> tuple[int, torch.Tensor] | None:
        """:meth:`_locate` for a 0-d CPU time and shared knots, searched on the host: the
        same segment as ``searchsorted`` (the time rounded to the knots' dtype first, as
        there), found without the half-dozen tensor operations of the search and the row
        copy (the row is then a view). That is most of the cost of a control derivative in
        a CDE solve: each small operation pays its dispatch again. ``None`` where the
        tensor search is needed: while tracing or compiling, or for a NaN time."""
        found = self._segment_on_host(t, right)
        if found is None:
            return None
        idx, _ = found
        if t.dtype != self._t.dtype:
            t = t.to(self._t.dtype)
        # The knot as a float is the same number (`host` holds the knots' own values), unless
        # a gradient is to flow into the knots.
        knot = self._t[idx] if self._t.requires_grad else self._host_knots[idx]  # type: ignore[index]
        return idx, t - knot

    def _segment_on_host(self, t: torch.Tensor, right: bool) -> tuple[int, float] | None:
        """The segment of a 0-d CPU time on shared knots (as :meth:`_locate_on_host`) and
        the time as a float, rounded to the knots' dtype; ``None`` where the tensor search
        is needed."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return None
        host = self._host_knots
        if host is None:
            host = self._host_knots = self._tsearch.tolist()
        tq = t if t.dtype == self._tsearch.dtype else t.detach().to(self._tsearch.dtype)
        v = tq.item()
        if v != v:
            return None
        pos = bisect.bisect_right(host, v) if right else bisect.bisect_left(host, v)
        return min(max(pos - 1, 0), self.num_segments - 1), v

    def _rows(self, coeffs: torch.Tensor, idx: torch.Tensor | int) -> torch.Tensor:
        """``coeffs[..., idx, :]`` for a 0-d index; per sample, each sample's own row."""
        if isinstance(idx, int) or idx.ndim == 0:
            return coeffs[..., idx, :]
        index = idx.reshape(idx.shape + (1, 1)).expand(idx.shape + (1, coeffs.shape[-1]))
        return coeffs.gather(-2, index).squeeze(-2)

    @staticmethod
    def _per_row(s: torch.Tensor) -> torch.Tensor:
        return s if s.ndim == 0 else s.unsqueeze(-1)

    # -- the public evaluation ------------------------------------------------------------
    def evaluate(self, t0: torch.Tensor, t1: torch.Tensor | None = None) -> torch.Tensor:
        """The value ``X(t0)``, shape ``(..., channels)``; with ``t1`` the increment
        ``X(t1) - X(t0)`` (what a :class:`ControlTerm` contracts with)."""
        who = f"{type(self).__name__}.evaluate"
        check_within(self, t0, who=who, what="`t0`")
        if t1 is None:
            return self._evaluate(t0)
        check_within(self, t1, who=who, what="`t1`")
        return self._evaluate(t1) - self._evaluate(t0)

    def evaluate_unchecked(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """``X(t1) - X(t0)`` without the interval check (for a solve, checked once)."""
        return self._evaluate(t1) - self._evaluate(t0)

    def _evaluate(self, t: torch.Tensor) -> torch.Tensor:
        idx, s = self._locate(t, "right")
        return self._value(idx, self._per_row(s))

    def derivative(self, t: torch.Tensor, side: str = "left") -> torch.Tensor:
        """dX/dt at ``t``, shape ``(..., channels)``; at a knot of a path whose derivative
        jumps, the left limit (``side="left"``) or the right limit (``side="right"``)."""
        if side not in ("left", "right"):
            raise ValueError(f"`side` must be 'left' or 'right', got {side!r}.")
        check_within(self, t, who=f"{type(self).__name__}.derivative", what="`t`")
        return self._derivative(t, side)

    def _derivative(self, t: torch.Tensor, side: str) -> torch.Tensor:
        """:meth:`derivative` without the interval check: for the vector field of a solve,
        whose interval was checked once (:meth:`check_times`)."""
        # A 0-d CPU time on shared knots through which no gradient flows (and that carries
        # none) is located on the host, its offset a Python float: the offset `_locate`
        # computes in the knots' dtype, bit for bit, since the time (rounded to that dtype)
        # and the knot are numbers of it, their difference in double precision is exact, and
        # an operation taking it as a scalar rounds it to that dtype, as the subtraction does.
        if (
            self._host_search
            and isinstance(t, torch.Tensor)
            and t.ndim == 0
            and t.is_cpu
            and not (torch.is_grad_enabled() and (t.requires_grad or self._t.requires_grad))
        ):
            found = self._segment_on_host(t, side == "right")
            if found is not None:
                seg, v = found
                return self._slope(seg, v - self._host_knots[seg])  # type: ignore[index]
        idx, s = self._locate(t, side)
        return self._slope(idx, self._per_row(s))

    def _value(self, idx: torch.Tensor | int, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _slope(self, idx: torch.Tensor | int, s: torch.Tensor | float) -> torch.Tensor:
        """The derivative on the rows ``idx`` at offset ``s``: a tensor, or a Python float
        for a 0-d time located on the host (:meth:`_derivative`), which subclasses
        take as an operation's scalar (no 0-d tensor, no operation to make it)."""
        raise NotImplementedError
