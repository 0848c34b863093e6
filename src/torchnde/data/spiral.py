r"""The spiral of torchdiffeq's ``ode_demo``: a bundled trajectory and the generator behind it.

The true dynamics are

$$\frac{dy}{dt} = y^{\circ 3} A, \qquad A = \begin{pmatrix} -0.1 & 2.0 \\ -2.0 & -0.1
\end{pmatrix}, \qquad y(0) = (2, 0),$$

with $y^{\circ 3}$ the elementwise cube and $y$ a row vector, on $t \in [0, 25]$. The cubic
makes the spiral turn fast far from the origin and slowly near it.

The bundled file ``spiral.npz`` holds ``t`` (1000 equally spaced times, float64) and ``y``
(shape ``(1000, 2)``, float32), made by ``generate_spiral()`` with its defaults: the true
dynamics solved in float64 with ``Dopri8`` at ``rtol=1e-10, atol=1e-12``, stepping onto every
output time, **without noise**.
The only difference from a fresh ``generate_spiral()`` is the float32 rounding of ``y``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

__all__ = ["SPIRAL_A", "SPIRAL_Y0", "spiral_vector_field", "generate_spiral", "load_spiral"]

#: The matrix of the true dynamics ``dy/dt = (y**3) @ A``.
SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))
#: The initial state of the bundled trajectory.
SPIRAL_Y0 = (2.0, 0.0)

_FILENAME = "spiral.npz"


def spiral_vector_field(t: torch.Tensor, y: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """The true dynamics ``(y**3) @ A``, with ``A`` passed as ``args``; ``y`` is ``(..., 2)``."""
    return (y**3) @ args


def generate_spiral(
    num_points: int = 1000,
    t1: float = 25.0,
    y0: tuple[float, float] = SPIRAL_Y0,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    noise_std: float = 0.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the true spiral dynamics in float64 and return ``(t, y)``.

    Args:
        num_points: the number of equally spaced times in ``[0, t1]``.
        t1: the end time.
        y0: the initial state.
        rtol, atol: tolerances of the reference solve (``Dopri8``, float64).
        noise_std: standard deviation of Gaussian noise added to ``y`` (the bundled data has
            none).
        seed: seed of the noise generator (only used when ``noise_std > 0``).

    Returns:
        ``t`` of shape ``(num_points,)`` and ``y`` of shape ``(num_points, 2)``, time first,
        both float64.
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"generate_spiral: `num_points` must be an int >= 2, got {num_points!r}.")
    if not t1 > 0:
        raise ValueError(f"generate_spiral: `t1` must be positive, got {t1!r}.")
    if not noise_std >= 0:
        raise ValueError(f"generate_spiral: `noise_std` must be >= 0, got {noise_std!r}.")
    # Imported here so that ``torchnde.data`` stays importable from anywhere in the package.
    from .. import Dopri8, ODETerm, PIDController, SaveAt, solve

    dtype = torch.float64
    t = torch.linspace(0.0, t1, num_points, dtype=dtype)
    a = torch.tensor(SPIRAL_A, dtype=dtype)
    sol = solve(
        ODETerm(spiral_vector_field),
        Dopri8(),
        t[0],
        t[-1],
        torch.tensor(y0, dtype=dtype),
        a,
        saveat=SaveAt(ts=t),
        # Steps land on every output time, so the saved values are step ends, not the dense
        # interpolant, whose error (lower order than the method) would dominate at this rtol.
        controller=PIDController(rtol=rtol, atol=atol, step_ts=t),
    )
    y = sol.ys
    if noise_std > 0:
        gen = torch.Generator().manual_seed(seed)
        y = y + noise_std * torch.randn(y.shape, generator=gen, dtype=dtype)
    return t, y


def load_spiral(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled spiral trajectory (see the module docstring for how it was made).

    Args:
        dtype: the dtype of the returned tensors.

    Returns:
        ``t`` of shape ``(1000,)`` and ``y`` of shape ``(1000, 2)``, time first.
    """
    with resources.files(__package__).joinpath(_FILENAME).open("rb") as f:
        with np.load(f) as data:
            t, y = data["t"], data["y"]
    return torch.from_numpy(t).to(dtype), torch.from_numpy(y).to(dtype)


def _write_bundled(path: Path | None = None) -> Path:
    """Regenerate the bundled file (``from torchnde.data.spiral import _write_bundled``)."""
    path = Path(__file__).with_name(_FILENAME) if path is None else Path(path)
    t, y = generate_spiral()
    np.savez_compressed(path, t=t.numpy(), y=y.numpy().astype(np.float32))
    return path
