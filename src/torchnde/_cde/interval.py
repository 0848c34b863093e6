r"""Where an interpolated path is defined: its interval, and the check of times against it.

A path through observations at $t_0 < \dots < t_n$ is defined on $[t_0, t_n]$. Outside, the
first and last pieces could be extended, but a cubic piece extended grows like $s^3$ (dX/dt
of 85 half a unit past the end of a natural cubic spline on $[0, 1]$): what a CDE solve
reads there is no information about the data. So a time outside is an error, unless the
path was built with ``extrapolate=True``. The check is made where times enter: by
``evaluate``/``derivative`` called by a user, and once per solve by ``solve`` and ``cdeint``
(``check_times``); the solver's own evaluations inside the checked interval skip it.

The ends get a tolerance of a few units of round-off of the knots' dtype (relative to the
larger end), so that ``t1`` recomputed in another dtype or as a sum of steps does not raise.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ends", "check_within"]

#: the tolerance at the ends, in units of the knots' machine epsilon times the larger end
_ROUND_OFF_ULPS = 8


def ends(knots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last observation time: 0-d for shared knots, the batch shape per sample."""
    return knots[..., 0], knots[..., -1]


def _fmt(x: torch.Tensor) -> str:
    return f"{float(x):.6g}"


def check_within(path: Any, t: Any, *, who: str, what: str) -> None:
    """Raise ``ValueError`` unless every time of ``t`` lies in the interval of ``path`` (of
    its own sample, for per-sample knots) or the path extrapolates.

    ``t`` is a number or a tensor: 0-d (one time for every sample), of the path's batch shape
    (one time per sample), or any other shape (each time against every sample). ``what``
    names the times as the caller's user wrote them (e.g. "`t`").
    """
    if path.extrapolate:
        return
    knots: torch.Tensor = path._tsearch
    lo, hi = ends(knots)
    if isinstance(t, torch.Tensor):
        q = t.detach().to(device=knots.device)
    else:  # a Python number has double precision
        q = torch.as_tensor(t, dtype=torch.float64, device=knots.device)
    if not torch.is_floating_point(q):
        q = q.to(knots.dtype)
    # round-off of the coarser of the two precisions, relative to the larger end
    eps = max(torch.finfo(q.dtype).eps, torch.finfo(knots.dtype).eps)
    dtype = torch.promote_types(q.dtype, knots.dtype)
    q, lo, hi = q.to(dtype), lo.to(dtype), hi.to(dtype)
    tol = _ROUND_OFF_ULPS * eps * torch.maximum(lo.abs(), hi.abs())
    if lo.ndim and q.ndim and q.shape != lo.shape:
        q = torch.stack([q.min(), q.max()])  # against every sample: the extremes suffice
        q = q.reshape((2,) + (1,) * lo.ndim)
    below, above = q < lo - tol, q > hi + tol
    if not bool((below | above).any()):
        return
    name = type(path).__name__
    fix = (
        "Pass times within the interval (e.g. X.interval), or build the path with "
        "extrapolate=True to extend its first and last pieces beyond the data."
    )
    if lo.ndim == 0:
        bad = q[below | above]
        got = f"{what} = {_fmt(bad[0])} lies"
        if bad.numel() > 1:
            got = f"{what} has {bad.numel()} times from {_fmt(bad.min())} to {_fmt(bad.max())}"
        raise ValueError(
            f"{who}: {got} outside the interval [{_fmt(lo)}, {_fmt(hi)}] of the {name} (its "
            f"first and last observation times), where the path is not defined. " + fix
        )
    where = (below | above).expand(torch.broadcast_shapes(q.shape, lo.shape))
    index = tuple(int(i) for i in where.nonzero()[0])
    sample = index[-lo.ndim :]
    qb = q.expand(where.shape)[index]
    raise ValueError(
        f"{who}: {what} = {_fmt(qb)} lies outside the interval [{_fmt(lo[sample])}, "
        f"{_fmt(hi[sample])}] of sample {sample if len(sample) > 1 else sample[0]} of the "
        f"{name} (per-sample observation times; its interval, where every sample is defined, "
        f"is [{_fmt(lo.max())}, {_fmt(hi.min())}]). " + fix
    )
