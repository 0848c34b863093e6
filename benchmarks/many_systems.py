"""Many tiny systems (issue 20, the torchSODE row): N independent 3-dimensional Lorenz systems
with per-system parameters and a per-system time scale, so that every system needs its own
step sequence, each solved with its own adaptive step.

* torchnde: one batched ``tn.solve`` with ``tn.PIDController(per_sample=True)`` (Dopri5 or
  Tsit5): every system keeps its own step size and accept/reject decision; the loop runs
  until the slowest system has reached t1 (finished systems are carried along).
* torchode 1.0.1: one batched ``AutoDiffAdjoint`` solve with its ``IntegralController``
  (per-sample by construction), same method and tolerances.
* SciPy ``solve_ivp`` (RK45, DOP853) looped over systems: a subset of ``--scipy-n`` systems is
  timed and the time is extrapolated **linearly** to N (the loop is embarrassingly serial).

Reported per (N, solver): median wall and process CPU time over ``--repeats`` interleaved
rounds (one call of each solver per round), throughput (systems / wall second), mean
accepted + rejected steps per system, mean vector-field evaluations per system (for the
batched libraries also the batched evaluations, i.e. how often the whole batch was
evaluated), and the max abs / max relative error of the state at t1 against a float64 SciPy
DOP853 reference at rtol = atol = 1e-12 on the first ``--ref-n`` systems.

All solves in float64, rtol = atol = ``--tol`` (1e-6), one thread, one process.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/many_systems.py --ns 1000,10000,100000``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from _common import (
    base_parser,
    machine_info,
    markdown_table,
    parse_list,
    set_threads,
    summarize,
    write_json,
)

T1 = 1.0


def make_problem(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-system parameters (n, 4): sigma, rho, beta, speed; initial states (n, 3).

    dy/dt = speed * lorenz(y; sigma, rho, beta), sigma ~ U(8, 12), rho ~ U(10, 40),
    beta ~ U(2, 3), speed ~ logU(0.5, 2): the step counts differ by about 4x across systems."""
    rng = np.random.default_rng(seed)
    p = np.stack(
        [
            rng.uniform(8, 12, n),
            rng.uniform(10, 40, n),
            rng.uniform(2, 3, n),
            np.exp(rng.uniform(np.log(0.5), np.log(2.0), n)),
        ],
        -1,
    )
    y0 = np.array([1.0, 1.0, 20.0]) + rng.normal(0.0, 1.0, (n, 3))
    return p, y0


def lorenz_np(p: np.ndarray) -> Any:
    s, r, b, c = (float(v) for v in p)

    def f(_t: float, y: np.ndarray) -> np.ndarray:
        return c * np.array([s * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - b * y[2]])

    return f


class Lorenz:
    """Batched torch field y: (n, 3) with per-row parameters; counts its calls."""

    def __init__(self, p: torch.Tensor) -> None:
        self.s, self.r, self.b, self.c = p.unbind(-1)
        self.calls = 0

    def __call__(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x, yy, z = y.unbind(-1)
        return self.c[:, None] * torch.stack(
            [self.s * (yy - x), x * (self.r - z) - yy, x * yy - self.b * z], -1
        )


def reference(p: np.ndarray, y0: np.ndarray) -> np.ndarray:
    from scipy.integrate import solve_ivp

    out = []
    for i in range(len(p)):
        sol = solve_ivp(lorenz_np(p[i]), (0.0, T1), y0[i], method="DOP853", rtol=1e-12, atol=1e-12)
        out.append(sol.y[:, -1])
    return np.stack(out)


def prep_torchnde(p: np.ndarray, y0: np.ndarray, method: str, tol: float) -> Any:
    import torchnde as tn

    f = Lorenz(torch.from_numpy(p))
    y0t = torch.from_numpy(y0)
    term = tn.ODETerm(lambda t, y, args: f(t, y))
    solver = {"dopri5": tn.Dopri5, "tsit5": tn.Tsit5}[method]()
    ctrl = tn.PIDController(rtol=tol, atol=tol, per_sample=True)

    def run() -> tuple[np.ndarray, dict[str, Any]]:
        f.calls = 0
        sol = tn.solve(term, solver, 0.0, T1, y0t, controller=ctrl)
        st = sol.stats
        steps = (st["num_accepted_steps"] + st["num_rejected_steps"]).double()
        return sol.ys[-1].numpy(), {
            "steps_mean": float(steps.mean()),
            "steps_max": int(steps.max()),
            "loop_steps": int(st["num_steps"]),
            "batched_evals": f.calls,
            # FSAL methods: 6 new stages per attempted step + the first evaluation
            "nfe_mean": float((6 * steps + 1).mean()),
        }

    return run


def prep_torchode(p: np.ndarray, y0: np.ndarray, method: str, tol: float) -> Any:
    import torchode as to

    f = Lorenz(torch.from_numpy(p))
    term = to.ODETerm(f)
    step = {"dopri5": to.Dopri5, "tsit5": to.Tsit5}[method](term=term)
    ctrl = to.IntegralController(atol=tol, rtol=tol, term=term)
    solver = to.AutoDiffAdjoint(step, ctrl)
    n = len(p)
    t_eval = torch.tensor([0.0, T1], dtype=torch.float64).expand(n, 2)
    prob = to.InitialValueProblem(y0=torch.from_numpy(y0), t_eval=t_eval)

    def run() -> tuple[np.ndarray, dict[str, Any]]:
        f.calls = 0
        sol = solver.solve(prob)
        if not bool((sol.status == 0).all()):
            raise RuntimeError(f"torchode status {sol.status.unique().tolist()}")
        st = sol.stats
        steps = st["n_steps"].double()
        return sol.ys[:, -1].numpy(), {
            "steps_mean": float(steps.mean()),
            "steps_max": int(steps.max()),
            "loop_steps": int(steps.max()),
            "batched_evals": f.calls,
            # torchode's n_f_evals counts the batched calls (the same for every sample): the
            # per-system count is computed as for torchnde (FSAL: 6 per attempt + 1)
            "nfe_mean": float((6 * steps + 1).mean()),
        }

    return run


def prep_scipy(p: np.ndarray, y0: np.ndarray, method: str, tol: float, m: int) -> Any:
    from scipy.integrate import solve_ivp

    fs = [lorenz_np(p[i]) for i in range(m)]

    def run() -> tuple[np.ndarray, dict[str, Any]]:
        ys, nfev, steps = [], [], []
        for i in range(m):
            sol = solve_ivp(fs[i], (0.0, T1), y0[i], method=method, rtol=tol, atol=tol)
            ys.append(sol.y[:, -1])
            nfev.append(sol.nfev)
            steps.append(len(sol.t) - 1)  # accepted steps only (SciPy does not count rejects)
        return np.stack(ys), {
            "steps_mean": float(np.mean(steps)),
            "steps_max": int(np.max(steps)),
            "nfe_mean": float(np.mean(nfev)),
        }

    return run


def main() -> None:
    ap = base_parser(__doc__.splitlines()[0], "torchnde,torchode,scipy")
    ap.add_argument("--ns", default="1000,10000,100000", help="numbers of systems")
    ap.add_argument("--methods", default="dopri5", help="dopri5,tsit5 (SciPy: RK45, DOP853)")
    ap.add_argument("--tol", type=float, default=1e-6, help="rtol = atol")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds per N")
    ap.add_argument("--scipy-n", type=int, default=200, help="systems SciPy is timed on")
    ap.add_argument("--ref-n", type=int, default=200, help="systems the error is measured on")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_threads(args.threads)
    libs, methods = parse_list(args.libs), parse_list(args.methods)
    ns = parse_list(args.ns, int)
    info = machine_info()
    rows: list[dict[str, Any]] = []
    for n in ns:
        p, y0 = make_problem(n, args.seed)
        k = min(args.ref_n, n)
        t0 = time.perf_counter()
        ref = reference(p[:k], y0[:k])
        print(f"N={n}: reference on {k} systems in {time.perf_counter() - t0:.1f} s", flush=True)
        runs: dict[str, Any] = {}
        m_scipy = min(args.scipy_n, n)
        for meth in methods:
            if "torchnde" in libs:
                runs[f"torchnde {meth} per-sample"] = prep_torchnde(p, y0, meth, args.tol)
            if "torchode" in libs:
                runs[f"torchode {meth}"] = prep_torchode(p, y0, meth, args.tol)
        if "scipy" in libs:
            for sm in ("RK45", "DOP853"):
                runs[f"scipy {sm} (loop)"] = prep_scipy(p, y0, sm, args.tol, m_scipy)
        stats: dict[str, Any] = {}
        wall: dict[str, list[float]] = {k_: [] for k_ in runs}
        cpu: dict[str, list[float]] = {k_: [] for k_ in runs}
        for name, fn in runs.items():  # untimed warm-up + stats + error
            ys, st = fn()
            kk = min(k, len(ys))
            err = np.abs(ys[:kk] - ref[:kk])
            st["max_abs_err"] = float(err.max())
            st["max_rel_err"] = float((err / np.maximum(np.abs(ref[:kk]), 1.0)).max())
            stats[name] = st
        for r in range(args.repeats):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))  # ABBA
            for name in order:
                c0, w0 = time.process_time(), time.perf_counter()
                runs[name]()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
        for name in runs:
            scale = n / m_scipy if name.startswith("scipy") else 1.0
            w = summarize(wall[name])
            row = {
                "n": n,
                "solver": name,
                "timed_systems": m_scipy if name.startswith("scipy") else n,
                "extrapolated": name.startswith("scipy") and m_scipy < n,
                "wall_s": w["median"] * scale,
                "cpu_s": float(np.median(cpu[name])) * scale,
                "wall_raw": w,
                "throughput": n / (w["median"] * scale),
                **stats[name],
            }
            rows.append(row)
            print(
                f"  {name:28s} wall {row['wall_s']:8.3f} s cpu {row['cpu_s']:8.3f} s "
                f"{row['throughput']:9.0f} sys/s steps {row['steps_mean']:.1f} "
                f"nfe {row['nfe_mean']:.1f} err {row['max_abs_err']:.1e}",
                flush=True,
            )
    cols = [
        ("n", "N", "g"),
        ("solver", "solver", "s"),
        ("wall_s", "wall s", "g"),
        ("cpu_s", "CPU s", "g"),
        ("throughput", "systems/s", "g"),
        ("steps_mean", "steps/system", "1f"),
        ("nfe_mean", "NFE/system", "1f"),
        ("loop_steps", "loop steps", "g"),
        ("batched_evals", "batch evals", "g"),
        ("max_abs_err", "max abs err", "e"),
        ("max_rel_err", "max rel err", "e"),
    ]
    table = markdown_table(rows, cols)
    print(table)
    out = write_json(
        "many_systems",
        {
            "machine": info,
            "config": vars(args),
            "notes": [
                "SciPy rows: time of a loop over the first scipy_n systems, scaled by N/scipy_n",
                "errors: state at t1 vs SciPy DOP853 rtol=atol=1e-12 on the first ref_n systems",
                "torchnde / torchode nfe_mean = 6 * (accepted + rejected) + 1 per system (FSAL); "
                "batch evals = calls of the batched field (each evaluates all N systems); "
                "loop steps = iterations of the batched loop (= the slowest system's attempts)",
                "SciPy steps are accepted steps only",
            ],
            "rows": rows,
            "table": table,
        },
        args.out,
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
