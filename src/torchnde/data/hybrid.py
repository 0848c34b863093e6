r"""Hybrid systems with closed-form solutions: a bouncing ball and a thermostat.

Both are written in closed form (no solver), so that they are independent references for the
solver's events and resets and for the models fitted through them.

**Bouncing ball.** Height $h$ and velocity $v$ with $\dot h = v$, $\dot v = -g$ in the air; at
each impact ($h$ crossing $0$ downwards) the velocity is reversed and scaled by the
coefficient of restitution $e \in (0, 1)$: $v^+ = -e v^-$. From $h(0) = h_0 > 0$,
$v(0) = v_0$ the first impact is at $T_1 = (v_0 + u)/g$ with impact speed
$u = \sqrt{v_0^2 + 2 g h_0}$; the ball leaves the $k$-th impact at speed $e^k u$, flies for
$2 e^k u / g$, so

$$T_{k+1} = T_k + \frac{2 e^k u}{g}, \qquad h(t) = e^k u\,(t - T_k) - \tfrac{g}{2}(t - T_k)^2
\quad (T_k \le t < T_{k+1}),$$

and the impacts accumulate at the Zeno time $T_\infty = T_1 + 2 e u / (g (1 - e))$.

**Thermostat.** A temperature $x$ relaxes towards $x_\text{on}$ while the heater is on (mode
1) and towards $x_\text{off}$ while it is off (mode 0), $\dot x = -a (x - x_\text{mode})$;
the heater switches off when $x$ rises through $x_\text{high}$ and on when it falls through
$x_\text{low}$. Within a mode $x(t) = x_\text{mode} + (x(s) - x_\text{mode}) e^{-a (t - s)}$,
and the time to reach a threshold $c$ is $\log((x(s) - x_\text{mode}) / (c -
x_\text{mode})) / a$.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "bouncing_ball",
    "bouncing_ball_impacts",
    "thermostat",
    "thermostat_switches",
]


def _as_time(ts: torch.Tensor | float, name: str) -> torch.Tensor:
    ts = torch.as_tensor(ts)
    if not torch.is_floating_point(ts) or ts.ndim > 1:
        raise ValueError(
            f"`{name}` must be a 0-d or 1-d floating-point tensor of times, got shape "
            f"{tuple(ts.shape)} and dtype {ts.dtype}."
        )
    return ts


def _param(x: float | torch.Tensor) -> torch.Tensor:
    """A tensor parameter as it is (its gradient kept); a number in float64."""
    return x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=torch.float64)


def _check_ball(gravity: float, restitution: float, height: float) -> None:
    for name, value, ok, contract in (
        ("gravity", gravity, float(gravity) > 0, "> 0"),
        ("restitution", restitution, 0 < float(restitution) < 1, "in (0, 1)"),
        ("height", height, float(height) > 0, "> 0 (the ball starts above the ground)"),
    ):
        if not ok or not math.isfinite(float(value)):
            raise ValueError(f"`{name}` must be {contract}, got {float(value)!r}.")


def bouncing_ball_impacts(
    gravity: float | torch.Tensor,
    restitution: float | torch.Tensor,
    height: float | torch.Tensor = 10.0,
    velocity: float | torch.Tensor = 0.0,
    *,
    t1: float,
) -> torch.Tensor:
    r"""The impact times $T_1 < T_2 < \dots$ of the bouncing ball that fall in $(0, t_1]$
    (a 1-d tensor; differentiable in the parameters). ``t1`` must be before the Zeno time."""
    g, e, h0, v0 = (_param(x) for x in (gravity, restitution, height, velocity))
    _check_ball(float(g.detach()), float(e.detach()), float(h0.detach()))
    u = torch.sqrt(v0**2 + 2 * g * h0)
    first = (v0 + u) / g
    zeno = first + 2 * e * u / (g * (1 - e))
    zeno_time = float(zeno.detach())
    if t1 >= zeno_time:
        raise ValueError(
            f"`t1` = {t1!r} is at or past the Zeno time {zeno_time:.6g} where the impacts "
            "accumulate: choose t1 before it (or a smaller restitution)."
        )
    times = [first]
    while True:
        k = len(times)
        nxt = times[-1] + 2 * e**k * u / g
        if float(nxt.detach()) > t1:
            break
        times.append(nxt)
    out = torch.stack(times)
    return out[out <= t1]


def bouncing_ball(
    ts: torch.Tensor,
    gravity: float | torch.Tensor = 9.8,
    restitution: float | torch.Tensor = 0.8,
    height: float | torch.Tensor = 10.0,
    velocity: float | torch.Tensor = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Height and velocity of the bouncing ball at the times ``ts`` (``t >= 0``, before the
    Zeno time), in closed form: two tensors of the shape of ``ts``, differentiable in the
    parameters. The defaults are torchdiffeq's ``bouncing_ball.py`` (absorption 0.2)."""
    ts = _as_time(ts, "ts")
    if ts.numel() and float(ts.min()) < 0:
        raise ValueError(f"`ts` must be >= 0 (the ball starts at t = 0), got min {ts.min()!r}.")
    t_end = float(ts.max()) if ts.numel() else 0.0
    impacts = bouncing_ball_impacts(gravity, restitution, height, velocity, t1=t_end)
    g = torch.as_tensor(gravity, dtype=ts.dtype)
    e = torch.as_tensor(restitution, dtype=ts.dtype)
    h0 = torch.as_tensor(height, dtype=ts.dtype)
    v0 = torch.as_tensor(velocity, dtype=ts.dtype)
    u = torch.sqrt(v0**2 + 2 * g * h0)
    # Arc k (k = 0 before the first impact) starts at time s_k with height h_k, speed w_k.
    k = torch.searchsorted(impacts.detach().to(ts.dtype), ts, right=True)
    starts = torch.cat([torch.zeros(1, dtype=ts.dtype), impacts.to(ts.dtype)])
    n = torch.arange(len(starts), dtype=ts.dtype)
    speeds = torch.where(n == 0, v0, e**n * u)
    heights = torch.where(n == 0, h0, torch.zeros((), dtype=ts.dtype))
    s = ts - starts[k]
    h = heights[k] + speeds[k] * s - 0.5 * g * s**2
    v = speeds[k] - g * s
    return h, v


def thermostat_switches(
    x0: float,
    mode0: int,
    *,
    t1: float,
    rate: float = 1.0,
    x_on: float = 3.0,
    x_off: float = -1.0,
    x_low: float = 0.0,
    x_high: float = 2.0,
) -> list[tuple[float, int]]:
    """The switching times in ``(0, t1]`` of the thermostat (see the module docstring) from
    ``x(0) = x0`` in mode ``mode0`` (1: heating), each with the mode entered."""
    if not (x_off < x_low < x_high < x_on):
        raise ValueError(
            "the thermostat needs x_off < x_low < x_high < x_on, got "
            f"{x_off}, {x_low}, {x_high}, {x_on}."
        )
    if mode0 not in (0, 1):
        raise ValueError(f"`mode0` must be 0 (off) or 1 (heating), got {mode0!r}.")
    out: list[tuple[float, int]] = []
    t, x, mode = 0.0, float(x0), mode0
    while True:
        target, threshold = (x_on, x_high) if mode == 1 else (x_off, x_low)
        # The guard fires when x reaches the threshold moving towards the target.
        if (x - threshold) * (target - threshold) >= 0:
            # Already past the threshold: the guard cannot cross any more in this mode.
            return out
        dt = math.log((x - target) / (threshold - target)) / rate
        if t + dt > t1:
            return out
        t, x, mode = t + dt, threshold, 1 - mode
        out.append((t, mode))


def thermostat(
    ts: torch.Tensor,
    x0: float,
    mode0: int,
    *,
    rate: float = 1.0,
    x_on: float = 3.0,
    x_off: float = -1.0,
    x_low: float = 0.0,
    x_high: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature and mode (int64) of the thermostat at the times ``ts`` (``>= 0``), in closed
    form: two tensors of the shape of ``ts``."""
    ts = _as_time(ts, "ts")
    t_end = float(ts.max()) if ts.numel() else 0.0
    kw = dict(rate=rate, x_on=x_on, x_off=x_off, x_low=x_low, x_high=x_high)
    switches = thermostat_switches(x0, mode0, t1=t_end, **kw)  # type: ignore[arg-type]
    starts = torch.tensor([0.0] + [s for s, _ in switches], dtype=ts.dtype)
    modes = torch.tensor([mode0] + [m for _, m in switches])
    # The state at each switch is the threshold of the mode left.
    x_start = torch.tensor(
        [float(x0)] + [x_high if m == 0 else x_low for _, m in switches], dtype=ts.dtype
    )
    k = torch.searchsorted(starts, ts, right=True) - 1
    target = torch.where(modes[k] == 1, x_on, x_off).to(ts.dtype)
    x = target + (x_start[k] - target) * torch.exp(-rate * (ts - starts[k]))
    return x, modes[k]
