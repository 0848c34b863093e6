"""dde: a Mackey-Glass delay equation solved at rtol 1e-6, torchnde against SciPy's method of steps.

Problem: $y' = \\beta y(t-\\tau) / (1 + y(t-\\tau)^n) - \\gamma y$ with $\\beta = 0.2$,
$\\gamma = 0.1$, $n = 10$, $\\tau = 17$ (chaotic), history $y = 1.2$ for $t \\le 0$, on
$[0, T]$ (``--t1``, default 300), one scalar state, float64.

Rows (timed round-robin in one process, one untimed call of each first):

- ``torchnde``: ``solve(DelayTerm(f, [17.0]), Dopri5(), ...)`` with ``PIDController(rtol=1e-6,
  atol=1e-9)``, the method of steps on its dense output (``torchnde._delay``);
- ``scipy``: the reference implementation of the tests (``tests/problems/dde.py``):
  ``solve_ivp`` (RK45, same tolerances, dense output) on segments of length tau, the vector
  field reading the dense outputs of the earlier segments.

Each row reports its time, the number of vector-field evaluations and the error at
$y(T)$ and the largest error at 50 times in $[0, T]$, against a tight reference (the SciPy
implementation with DOP853 at rtol 1e-12, atol 1e-14). Chaos amplifies differences, so
keep ``T`` moderate (errors at rtol 1e-6 grow by a factor ~e every ~50 time units).

    .venv/bin/python benchmarks/dde.py           # ~20 s
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)

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
from problems.dde import mackey_glass, scipy_dde

BETA, GAMMA, N, TAU, Y_HIST = 0.2, 0.1, 10.0, 17.0, 1.2


def main() -> None:
    p = base_parser("Mackey-Glass DDE: torchnde vs SciPy method of steps", "torchnde,scipy")
    p.add_argument("--t1", type=float, default=300.0)
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-9)
    a = p.parse_args()
    set_threads(a.threads)
    f_np = mackey_glass(BETA, GAMMA, N)
    phi_np = lambda t: np.array([Y_HIST])
    ts = np.linspace(0, a.t1, 51)[1:]
    ref, _ = scipy_dde(f_np, [TAU], phi_np, 0.0, a.t1, np.array([Y_HIST]), rtol=1e-12, atol=1e-14)
    exact = np.array([ref(t)[0] for t in ts])

    nfe = {"n": 0}

    def f_torch(t, y, yd, args):
        nfe["n"] += 1
        return BETA * yd[0] / (1 + yd[0] ** N) - GAMMA * y

    term = tn.DelayTerm(f_torch, [TAU])
    y0 = torch.tensor([Y_HIST], dtype=torch.float64)
    ctrl = tn.PIDController(rtol=a.rtol, atol=a.atol)
    out: dict[str, dict] = {}

    def run_torchnde():
        nfe["n"] = 0
        sol = tn.solve(term, tn.Dopri5(), 0.0, a.t1, y0, controller=ctrl,
                       saveat=tn.SaveAt(ts=torch.tensor(ts)))  # fmt: skip
        out["torchnde"] = {"ys": sol.ys[:, 0].numpy(), "nfe": nfe["n"]}

    def run_scipy():
        h, n = scipy_dde(f_np, [TAU], phi_np, 0.0, a.t1, np.array([Y_HIST]),
                         rtol=a.rtol, atol=a.atol, method="RK45")  # fmt: skip
        out["scipy"] = {"ys": np.array([h(t)[0] for t in ts]), "nfe": n}

    fns = {"torchnde": run_torchnde, "scipy": run_scipy}
    fns = {k: v for k, v in fns.items() if k in a.libs.split(",")}
    for fn in fns.values():
        fn()
    times = time_interleaved(fns, min_rounds=3, target_s=1.0)
    rows = []
    for k in fns:
        err = np.abs(out[k]["ys"] - exact)
        rows.append({
            "impl": k,
            "median_s": times[k]["median"],
            "nfe": out[k]["nfe"],
            "err_T": float(err[-1]),
            "max_err": float(err.max()),
        })  # fmt: skip
    print(f"Mackey-Glass tau={TAU}, [0, {a.t1:g}], rtol={a.rtol:g}, atol={a.atol:g}")
    print(markdown_table(rows, [("impl", "impl", "s"), ("median_s", "time (s)", "g"),
                                ("nfe", "NFE", "d"), ("err_T", "|err y(T)|", "e"),
                                ("max_err", "max err", "e")]))  # fmt: skip
    path = write_json("dde", {"machine": machine_info(), "args": vars(a), "rows": rows,
                              "times": times}, a.out)  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
