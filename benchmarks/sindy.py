"""STLSQ on 10^5 samples: torchnde.discovery against PySINDy, same data, same coefficients.

Lorenz (sigma, rho, beta = 10, 28, 8/3) sampled every 1e-3 from (-8, 8, 27), solved by torchnde
(Dopri5, rtol 1e-10), with its exact derivatives (so only the library and the sparse regression
are timed, not differentiation); a degree-2 polynomial library (10 terms), STLSQ threshold 0.1
at ``alpha`` 0.05 (PySINDy's default) and 0. Timed: ``SINDy(...).fit(x, x_dot=...)`` end to
end in each library (float64, one thread), round-robin medians. Reported: the time ratio and
the largest coefficient difference between the two fits.

    .venv/bin/python benchmarks/sindy.py [--samples 100000] [--threads 1]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    base_parser,
    machine_info,
    markdown_table,
    set_threads,
    time_interleaved,
    write_json,
)

# isort: split
import numpy as np
import torch

import torchnde as tn
from torchnde.discovery import STLSQ, PolynomialLibrary, SINDy


def lorenz(t, y, args=None):
    x, v, z = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([10.0 * (v - x), x * (28.0 - z) - v, x * v - 8.0 / 3.0 * z], -1)


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchnde,pysindy")
    p.add_argument("--samples", type=int, default=100_000)
    args = p.parse_args()
    set_threads(args.threads)
    n = args.samples
    ts = torch.arange(n, dtype=torch.float64) * 1e-3
    x = tn.solve(
        tn.ODETerm(lorenz),
        tn.Dopri5(),
        0.0,
        float(ts[-1]),
        torch.tensor([-8.0, 8.0, 27.0], dtype=torch.float64),
        saveat=tn.SaveAt(ts=ts),
        controller=tn.PIDController(rtol=1e-10, atol=1e-10),
        max_steps=10**7,
    ).ys
    x_dot = lorenz(0.0, x)
    xn, xdn = x.numpy(), x_dot.numpy()
    import pysindy as ps

    rows = []
    for alpha in (0.05, 0.0):

        def ours(alpha=alpha):
            return SINDy(
                optimizer=STLSQ(threshold=0.1, alpha=alpha), feature_library=PolynomialLibrary(2)
            ).fit(x, x_dot=x_dot)

        def theirs(alpha=alpha):
            return ps.SINDy(
                optimizer=ps.STLSQ(threshold=0.1, alpha=alpha),
                feature_library=ps.PolynomialLibrary(degree=2),
            ).fit(xn, t=1e-3, x_dot=xdn)

        ours(), theirs()  # warm-up
        timing = time_interleaved({"torchnde": ours, "pysindy": theirs}, min_rounds=5)
        c_ours = ours().coefficients().numpy()
        c_theirs = theirs().coefficients()
        t_ours, t_theirs = timing["torchnde"]["median"], timing["pysindy"]["median"]
        rows.append(
            {
                "alpha": alpha,
                "samples": n,
                "torchnde_s": t_ours,
                "pysindy_s": t_theirs,
                "speedup": t_theirs / t_ours,
                "max_coef_diff": float(np.abs(c_ours - c_theirs).max()),
                "same_support": bool(((c_ours != 0) == (c_theirs != 0)).all()),
                "torchnde_equations": ours().equations(4),
            }
        )
    print(
        markdown_table(
            rows,
            [
                ("alpha", "alpha", "g"),
                ("samples", "samples", "g"),
                ("torchnde_s", "torchnde ms", "ms"),
                ("pysindy_s", "PySINDy ms", "ms"),
                ("speedup", "PySINDy / torchnde", "x"),
                ("max_coef_diff", "max coef diff", "e"),
                ("same_support", "same support", "g"),
            ],
        )
    )
    path = write_json(
        "sindy",
        {"machine": machine_info(), "pysindy": ps.__version__, "rows": rows},
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
