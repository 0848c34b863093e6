"""Stiff solvers: torchnde's implicit and Rosenbrock methods against SciPy's Radau, BDF and
LSODA, on Robertson (t to 1e5) and Van der Pol (mu = 1000, t to 1000), then a batch of 256
Robertson systems with per-sample rate constants (SciPy looped per sample, torchnde batched
with per-sample stepping), with and without gradients.

Reported per row: median wall time over ``--repeats`` interleaved runs, steps, Jacobian
evaluations, LU factorisations (Radau5 and SciPy Radau count the real and the complex one
separately), and the max relative error at t1 against SciPy Radau at rtol = 1e-10 with the
analytic Jacobian. SciPy runs with its default finite-difference Jacobians (as torchnde's
``jacobian="finite_difference"`` rows do).

A second table gives process CPU time over SciPy Radau's, measured side by side in ABBA
order (``cpu_ratios``).

Run: ``.venv/bin/python benchmarks/stiff.py`` (about 2-4 minutes on one core;
``--small-only`` skips the batched section).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

import torchnde as tn
from _common import machine_info, markdown_table, write_json

torch.set_num_threads(1)


def robertson(t: Any, y: Any, k3: Any = 3e7) -> Any:
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    r = k3 * y2 * y2
    parts = [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - r, r]
    return torch.stack(parts, -1) if isinstance(y, torch.Tensor) else np.stack(parts, -1)


def robertson_jac(t: float, y: np.ndarray, k3: float = 3e7) -> np.ndarray:
    return np.array(
        [
            [-0.04, 1e4 * y[2], 1e4 * y[1]],
            [0.04, -1e4 * y[2] - 2 * k3 * y[1], -1e4 * y[1]],
            [0.0, 2 * k3 * y[1], 0.0],
        ]
    )


MU = 1000.0


def vdp(t: Any, y: Any) -> Any:
    y1, y2 = y[..., 0], y[..., 1]
    parts = [y2, MU * (1 - y1 * y1) * y2 - y1]
    return torch.stack(parts, -1) if isinstance(y, torch.Tensor) else np.stack(parts, -1)


def vdp_jac(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([[0.0, 1.0], [-2 * MU * y[0] * y[1] - 1, MU * (1 - y[0] ** 2)]])


PROBLEMS = {
    "robertson": (robertson, robertson_jac, [1.0, 0.0, 0.0], 1e5, 1e-6, 1e-10),
    "vdp1000": (vdp, vdp_jac, [2.0, 0.0], 1000.0, 1e-6, 1e-6),
}


def median_time(fn: Any, repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up (and the result)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


def small_systems(repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in PROBLEMS:
        rows += _small_one(name, repeats)
    return rows


def _small_one(name: str, repeats: int) -> list[dict[str, Any]]:
    f, jac, y0, t1, rtol, atol = PROBLEMS[name]
    rows = []
    ref = solve_ivp(f, (0, t1), y0, method="Radau", rtol=1e-10, atol=atol * 1e-4, jac=jac)
    yref = ref.y[:, -1]
    scale = np.maximum(np.abs(yref), atol)

    def rel(y: np.ndarray) -> float:
        return float(np.max(np.abs(y - yref) / scale))

    for method in ("Radau", "BDF", "LSODA"):

        def run_scipy(method: str = method) -> Any:
            return solve_ivp(f, (0, t1), y0, method=method, rtol=rtol, atol=atol)

        wall, sol = median_time(run_scipy, repeats)
        rows.append(
            {"problem": name, "solver": f"scipy {method}", "time_s": wall,
             "steps": int(sol.t.size - 1), "jacobians": int(sol.njev),
             "lus": int(sol.nlu), "fevals": int(sol.nfev), "error": rel(sol.y[:, -1])}
        )  # fmt: skip
    y0t = torch.tensor(y0, dtype=torch.float64)
    solvers = {
        "Rodas5 (fd)": tn.Rodas5(jacobian="finite_difference"),
        "Rodas5 (autograd)": tn.Rodas5(),
        "Kvaerno5 (fd)": tn.Kvaerno5(jacobian="finite_difference"),
        "Radau5 (fd)": tn.Radau5(jacobian="finite_difference"),
        "Radau5 (autograd)": tn.Radau5(),
        "Kvaerno3 (fd)": tn.Kvaerno3(jacobian="finite_difference"),
        "AutoSwitch(Tsit5, Rodas5 fd)": tn.AutoSwitch(
            tn.Tsit5(), tn.Rodas5(jacobian="finite_difference")
        ),
    }
    for label, solver in solvers.items():

        def run_tn(solver: Any = solver) -> Any:
            return tn.solve(
                tn.ODETerm(lambda t, y, a: f(t, y)), solver, 0.0, t1, y0t,
                controller=tn.PIDController(rtol=rtol, atol=atol),
            )  # fmt: skip

        wall, sol = median_time(run_tn, repeats)
        rows.append(
            {"problem": name, "solver": f"torchnde {label}", "time_s": wall,
             "steps": int(sol.stats["num_steps"]),
             "jacobians": int(sol.stats.get("num_jacobians", 0)),
             "lus": int(sol.stats.get("num_lu_factorisations", 0)),
             "fevals": int(sol.stats["num_fevals"]), "error": rel(sol.ys[-1].numpy())}
        )  # fmt: skip
    return rows


def cpu_ratios(repeats: int) -> list[dict[str, Any]]:
    """Process CPU time of each torchnde solver over SciPy Radau's, on each problem, measured
    side by side in this process in ABBA order (``repeats`` rounds of four solves)."""
    rows: list[dict[str, Any]] = []
    for name in PROBLEMS:
        rows += _ratios_one(name, repeats)
    return rows


def _ratios_one(name: str, repeats: int) -> list[dict[str, Any]]:
    f, _, y0, t1, rtol, atol = PROBLEMS[name]
    y0t = torch.tensor(y0, dtype=torch.float64)
    rows = []

    def scipy_radau() -> Any:
        return solve_ivp(f, (0, t1), y0, method="Radau", rtol=rtol, atol=atol)

    for label, solver in (
        ("Radau5 (fd)", tn.Radau5(jacobian="finite_difference")),
        ("Radau5 (autograd)", tn.Radau5()),
        ("Rodas5 (fd)", tn.Rodas5(jacobian="finite_difference")),
        ("Kvaerno5 (fd)", tn.Kvaerno5(jacobian="finite_difference")),
    ):

        def ours(solver: Any = solver) -> Any:
            return tn.solve(
                tn.ODETerm(lambda t, y, a: f(t, y)), solver, 0.0, t1, y0t,
                controller=tn.PIDController(rtol=rtol, atol=atol),
            )  # fmt: skip

        ours()
        scipy_radau()  # warm-up
        cpu = {"a": 0.0, "b": 0.0}
        for _ in range(repeats):
            for who in ("a", "b", "b", "a"):
                start = time.process_time()
                (scipy_radau if who == "a" else ours)()
                cpu[who] += time.process_time() - start
        rows.append(
            {"problem": name, "solver": f"torchnde {label}",
             "cpu_s": cpu["b"] / (2 * repeats), "scipy_cpu_s": cpu["a"] / (2 * repeats),
             "ratio": cpu["b"] / cpu["a"]}
        )  # fmt: skip
    return rows


def batched(batch: int, repeats: int) -> list[dict[str, Any]]:
    """Robertson with k3 log-spaced in [1e5, 3e7] per sample, t to 1e3."""
    t1, rtol, atol = 1e3, 1e-6, 1e-10
    k3 = np.logspace(5, np.log10(3e7), batch)
    y0 = np.array([1.0, 0.0, 0.0])
    refs = np.stack(
        [
            solve_ivp(
                lambda t, y, k=k: robertson(t, y, k), (0, t1), y0, method="Radau",
                rtol=1e-10, atol=1e-14, jac=lambda t, y, k=k: robertson_jac(t, y, k),
            ).y[:, -1]
            for k in k3
        ]
    )  # fmt: skip
    scale = np.maximum(np.abs(refs), atol)
    rows = []
    for method in ("Radau", "BDF", "LSODA"):

        def loop(method: str = method) -> Any:
            return np.stack(
                [
                    solve_ivp(lambda t, y, k=k: robertson(t, y, k), (0, t1), y0,
                              method=method, rtol=rtol, atol=atol).y[:, -1]
                    for k in k3
                ]
            )  # fmt: skip

        wall, ys = median_time(loop, 1)
        rows.append(
            {"solver": f"scipy {method} (loop)", "mode": "forward", "time_s": wall,
             "error": float(np.max(np.abs(ys - refs) / scale))}
        )  # fmt: skip
    k3t = torch.tensor(k3, dtype=torch.float64)
    y0t = torch.tensor(y0, dtype=torch.float64).expand(batch, 3).contiguous()
    for label, solver in (
        ("Rodas5 (fd)", tn.Rodas5(jacobian="finite_difference")),
        ("Rodas5 (autograd)", tn.Rodas5()),
        ("Kvaerno5 (fd)", tn.Kvaerno5(jacobian="finite_difference")),
        ("Radau5 (fd)", tn.Radau5(jacobian="finite_difference")),
    ):
        for mode in ("forward", "forward+backward"):

            def run(solver: Any = solver, mode: str = mode) -> Any:
                k = k3t.clone().requires_grad_(mode != "forward")
                sol = tn.solve(
                    tn.ODETerm(lambda t, y, a: robertson(t, y, a)), solver, 0.0, t1, y0t, k,
                    controller=tn.PIDController(rtol=rtol, atol=atol, per_sample=True),
                )  # fmt: skip
                if mode != "forward":
                    sol.ys[-1, :, 2].sum().backward()
                return sol

            wall, sol = median_time(run, repeats)
            rows.append(
                {"solver": f"torchnde {label} (per-sample batch)", "mode": mode,
                 "time_s": wall,
                 "error": float(np.max(np.abs(sol.ys[-1].detach().numpy() - refs) / scale)),
                 "max_steps": int(sol.stats["num_steps"])}
            )  # fmt: skip
    return rows


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=None)
    ap.add_argument("--small-only", action="store_true", help="skip the batched section")
    args = ap.parse_args()
    small = small_systems(args.repeats)
    print(
        markdown_table(
            small,
            [("problem", "problem", "s"), ("solver", "solver", "s"), ("time_s", "time (s)", "g"),
             ("steps", "steps", "d"), ("jacobians", "Jacobians", "d"), ("lus", "LUs", "d"),
             ("fevals", "f evals", "d"), ("error", "rel. error", "e")],
        )
    )  # fmt: skip
    ratios = cpu_ratios(args.repeats)
    print()
    print(
        markdown_table(
            ratios,
            [("problem", "problem", "s"), ("solver", "solver", "s"),
             ("cpu_s", "CPU (s)", "g"), ("scipy_cpu_s", "SciPy Radau CPU (s)", "g"),
             ("ratio", "CPU ratio vs SciPy Radau", "g")],
        )
    )  # fmt: skip
    if args.small_only:
        return
    big = batched(args.batch, max(1, args.repeats - 2))
    print()
    print(
        markdown_table(
            big,
            [("solver", "solver", "s"), ("mode", "mode", "s"), ("time_s", "time (s)", "g"),
             ("error", "max rel. error", "e")],
        )
    )  # fmt: skip
    path = write_json(
        "stiff",
        {
            "machine": machine_info(),
            "small": small,
            "cpu_ratios": ratios,
            "batch": args.batch,
            "batched": big,
        },
        args.out,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
