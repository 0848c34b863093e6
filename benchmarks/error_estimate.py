"""error_estimate: Dopri5's two embedded error estimates, work against precision (issue 20).

    .venv/bin/python benchmarks/error_estimate.py            # ~1 min on 1 thread

torchnde's ``Dopri5()`` estimates the local error with Dormand and Prince's embedded fourth
order solution (Hairer's DOPRI5 and SciPy's RK45 do too); torchdiffeq's, torchode's and
diffrax's ``dopri5`` with Shampine's (1986), whose ``b - b_hat`` is exactly 2/3 of it, and
the peers also never shrink a step after an accepted one (``hold=(0.2, 1.0)`` here). At equal
tolerances the peers therefore take fewer, longer steps and make larger errors. Which is the
better default is a question of work against precision, not of NFE at equal tolerances: this
script answers it. No timings: NFE is deterministic.

For each problem (float64, one thread), rtol = atol = 10^-3 ... 10^-10, every variant's NFE
and error at the final time (max over components of ``|y - ref| / max(1, |ref|)``, the
reference SciPy DOP853 at rtol = atol = 1e-13, or the exact solution where there is one):

- ``dormand-prince``: ``Dopri5()`` with the default ``PIDController`` (torchnde's default);
- ``shampine``: ``Dopri5(error_estimate="shampine")``;
- ``dormand-prince+hold`` / ``shampine+hold``: the same with ``hold=(0.2, 1.0)`` (the second
  is the peers' rule, "peer steps");
- ``torchdiffeq`` (joint problems) / ``torchode`` (the per-sample one), the peers' dopri5.

``nfe_ratio`` of a variant: its NFE at the default's error, interpolated log-log along its own
curve, over the default's NFE, geometric mean over the default's points inside the variant's
range of errors (< 1: cheaper than the default for the same error).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    base_parser,
    machine_info,
    make_mlp_weights,
    markdown_table,
    numpy_mlp,
    set_threads,
    torch_mlp,
    write_json,
)

# isort: split
import numpy as np
import torch

TOLS = [10.0**-k for k in range(3, 11)]


def _arenstorf(t: Any, y: torch.Tensor) -> torch.Tensor:
    mu = 0.012277471
    m = 1 - mu
    x, z, u, v = y.unbind(-1)
    d1 = ((x + mu) ** 2 + z**2) ** 1.5
    d2 = ((x - m) ** 2 + z**2) ** 1.5
    return torch.stack(
        [u, v, x + 2 * v - m * (x + mu) / d1 - mu * (x - m) / d2,
         z - 2 * u - m * z / d1 - mu * z / d2], -1,
    )  # fmt: skip


def _lorenz(t: Any, y: torch.Tensor) -> torch.Tensor:
    x, z, w = y.unbind(-1)
    return torch.stack([10 * (z - x), x * (28 - w) - z, x * z - 8 / 3 * w], -1)


def _vdp(t: Any, y: torch.Tensor) -> torch.Tensor:
    x, v = y.unbind(-1)
    return torch.stack([v, 5.0 * (1 - x**2) * v - x], -1)


def _kepler(t: Any, y: torch.Tensor) -> torch.Tensor:
    q1, q2, p1, p2 = y.unbind(-1)
    r3 = (q1**2 + q2**2) ** 1.5
    return torch.stack([p1, p2, -q1 / r3, -q2 / r3], -1)


def _f64(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def problems() -> list[dict[str, Any]]:
    """name, field f(t, y), y0 (float64), t1, per_sample, and whether the end state is y0."""
    e = 0.6
    out = [
        dict(name="Arenstorf orbit (d=4)", f=_arenstorf, t1=17.0652165601579625588917206249,
             y0=_f64(0.994, 0.0, 0.0, -2.00158510637908252240537862224)),
        dict(name="Lorenz on [0, 2] (d=3)", f=_lorenz, t1=2.0, y0=_f64(1.0, 1.0, 20.0)),
        dict(name="Van der Pol mu=5 on [0, 10] (d=2)", f=_vdp, t1=10.0,
             y0=_f64(2.0, 0.0)),
        # two orbits of eccentricity 0.6: the exact end state is the start
        dict(name="Kepler e=0.6, two orbits (d=4)", f=_kepler, t1=4 * math.pi,
             y0=_f64(1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))), exact=True),
    ]  # fmt: skip
    for d, b, ps in ((2, 1, False), (32, 256, False), (32, 256, True)):
        w = make_mlp_weights(d, 64 if d == 2 else 128, gain=8.0)
        net = torch_mlp(w, torch.float64)
        for q in net.parameters():
            q.requires_grad_(False)
        y0 = torch.from_numpy(np.random.default_rng(0).standard_normal((b, d)))
        mode = ", per-sample" if ps else ""
        out.append(dict(name=f"tanh MLP gain 8 (d={d}, B={b}{mode})",
                        f=lambda t, y, net=net: net(y), t1=1.0, y0=y0, per_sample=ps,
                        numpy_f=numpy_mlp(w)))  # fmt: skip
    return out


def reference(p: dict[str, Any]) -> np.ndarray:
    from scipy.integrate import solve_ivp

    y0 = p["y0"].numpy()
    if p.get("exact"):
        return y0
    shape = y0.shape
    if "numpy_f" in p:
        nf = p["numpy_f"]

        def rhs(t: float, y: np.ndarray) -> np.ndarray:
            return nf(y.reshape(shape)).reshape(-1)
    else:

        def rhs(t: float, y: np.ndarray) -> np.ndarray:
            return p["f"](t, torch.from_numpy(y.reshape(shape))).numpy().reshape(-1)

    sol = solve_ivp(rhs, (0.0, p["t1"]), y0.reshape(-1), method="DOP853", rtol=1e-13,
                    atol=1e-13)  # fmt: skip
    if not sol.success:
        raise RuntimeError(sol.message)
    return sol.y[:, -1].reshape(shape)


def error(y: torch.Tensor, ref: np.ndarray) -> float:
    r = torch.from_numpy(ref)
    return float(((y - r).abs() / r.abs().clamp_min(1.0)).max())


def run_variant(tn: Any, p: dict[str, Any], estimate: str, hold: Any, tol: float) -> tuple:
    ctrl = tn.PIDController(rtol=tol, atol=tol, hold=hold, per_sample=p.get("per_sample", False))
    sol = tn.solve(tn.ODETerm(lambda t, y, args: p["f"](t, y)),
                   tn.Dopri5(error_estimate=estimate), 0.0, p["t1"], p["y0"],
                   controller=ctrl, max_steps=10**5)  # fmt: skip
    if not bool((torch.as_tensor(sol.status) == 0).all()):
        raise RuntimeError(f"{p['name']}: status {sol.status}")
    return int(sol.stats["num_fevals"]), sol.ys[-1]


def run_peer(lib: str, p: dict[str, Any], tol: float) -> tuple:
    count = [0]

    def f(t: Any, y: torch.Tensor) -> torch.Tensor:
        count[0] += 1
        return p["f"](t, y)

    if lib == "torchdiffeq":
        import torchdiffeq

        t = torch.tensor([0.0, p["t1"]], dtype=torch.float64)
        y = torchdiffeq.odeint(f, p["y0"], t, rtol=tol, atol=tol, method="dopri5")[-1]
        return count[0], y
    import torchode as to

    term = to.ODETerm(f)
    solver = to.AutoDiffAdjoint(
        to.Dopri5(term=term), to.IntegralController(atol=tol, rtol=tol, term=term)
    )
    y0 = p["y0"]
    t_eval = torch.tensor([0.0, p["t1"]], dtype=torch.float64).expand(y0.shape[0], -1)
    sol = solver.solve(to.InitialValueProblem(y0=y0, t_eval=t_eval))
    return count[0], sol.ys[:, -1]


def nfe_ratio(base: list[tuple[int, float]], other: list[tuple[int, float]]) -> float | None:
    """Geometric mean over ``base``'s points of other's NFE at base's error / base's NFE."""
    pts = sorted((math.log(e), math.log(n)) for n, e in other if e > 0)
    le = np.array([x for x, _ in pts])
    ln = np.array([y for _, y in pts])
    logs = [
        float(np.interp(math.log(e), le, ln)) - math.log(n)
        for n, e in base
        if e > 0 and le[0] <= math.log(e) <= le[-1]
    ]
    return math.exp(sum(logs) / len(logs)) if logs else None


def main() -> None:
    p = base_parser("Dopri5's error estimates: NFE against error", "torchnde,torchdiffeq,torchode")
    p.add_argument("--tols", default=None, help="comma-separated (default 1e-3 ... 1e-10)")
    a = p.parse_args()
    set_threads(a.threads)
    import torchnde as tn

    tols = [float(x) for x in a.tols.split(",")] if a.tols else TOLS
    variants = [
        ("dormand-prince", "dormand-prince", None),
        ("shampine", "shampine", None),
        ("dormand-prince+hold", "dormand-prince", (0.2, 1.0)),
        ("shampine+hold", "shampine", (0.2, 1.0)),
    ]
    libs = a.libs.split(",")
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list]] = {}
    with torch.no_grad():
        for prob in problems():
            ref = reference(prob)
            peer = "torchode" if prob.get("per_sample") else "torchdiffeq"
            names = [v[0] for v in variants] + ([peer] if peer in libs else [])
            curve: dict[str, list] = {k: [] for k in names}
            for tol in tols:
                for name, est, hold in variants:
                    n, y = run_variant(tn, prob, est, hold, tol)
                    curve[name].append((n, error(y, ref)))
                if peer in libs:
                    n, y = run_peer(peer, prob, tol)
                    curve[peer].append((n, error(y, ref)))
            curves[prob["name"]] = curve
            row: dict[str, Any] = {"problem": prob["name"]}
            for k in names:
                row[f"{k} nfe"] = "/".join(str(n) for n, _ in curve[k][::3])
                row[f"{k} ratio"] = nfe_ratio(curve["dormand-prince"], curve[k])
            rows.append(row)
            print(prob["name"], {k: curve[k] for k in names}, flush=True)
            print({k: row[f"{k} ratio"] for k in names}, flush=True)
    cols = [("problem", "problem", "s")]
    for name in [v[0] for v in variants] + ["torchdiffeq", "torchode"]:
        cols.append((f"{name} ratio", f"{name}: NFE at equal error", "g"))
    print()
    print(markdown_table(rows, cols))
    out = write_json(
        "error_estimate",
        {"machine": machine_info(), "tols": tols, "curves": curves, "rows": rows},
        a.out,
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
