"""step_overhead: the cost of one explicit Runge–Kutta step outside the vector field (issue 20).

    PYTHONPATH=src .venv/bin/python benchmarks/step_overhead.py --baseline-rev main

For Dopri5 and Tsit5, joint and per-sample stepping, d = 32 (float32) at B in {1, 256, 4096},
and N = 10^5 Lorenz systems (float64, per sample), one attempted step ``solver.step`` +
``controller.adapt`` (``PIDController``, rtol = atol = 1e-6) is timed on fixed inputs with a
*constant* vector field (a closure returning a precomputed tensor: the field costs one Python
call), so the time measured is the engine's own: stage combinations, stage products, error
estimate, error norm and controller. It is expressed in units of one evaluation of the
workload's field at the same B: the d=32 -> 128 -> 128 -> d tanh MLP of ``speed.py`` (gain 8),
or the Lorenz field of ``many_systems.py``; the bare field is timed in the same rounds.

``--solve`` also times whole solves (``tn.solve`` with the constant field, ``dtmax`` forcing 50
steps, 10 save times): (CPU - NFE x bare call) / steps, which adds the loop's own per-step work
(state selection, saves, host transfer; ``_core/loop.py``) to the step's.

``--baseline-rev REV`` imports the torchnde of a git revision as ``torchnde_base`` (as
``speed.py`` does), and every measurement is made for both in the same rounds, the order
reversed every round (ABBA), process CPU time, median over rounds. The max abs difference of
a real solve (the MLP field, Dopri5/Tsit5, rtol 1e-6, 10 save times; Lorenz N = 10^4) between
the two is reported as a check that the numerics did not change beyond rounding.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    base_parser,
    machine_info,
    make_mlp_weights,
    markdown_table,
    set_threads,
    torch_mlp,
    write_json,
)

# isort: split
import numpy as np
import torch

from many_systems import Lorenz, make_problem
from speed import load_baseline


def time_rounds(fns: dict[str, Any], rounds: int, inner: int) -> dict[str, float]:
    """Median process-CPU seconds per call over ``rounds`` ABBA rounds of ``inner`` calls."""
    keys = list(fns)
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    for k in keys:
        fns[k]()  # warm-up
    for r in range(rounds):
        for k in keys if r % 2 == 0 else reversed(keys):
            f = fns[k]
            c0 = time.process_time()
            for _ in range(inner):
                f()
            cpu[k].append((time.process_time() - c0) / inner)
    return {k: float(np.median(v)) for k, v in cpu.items()}


def step_fn(tn: Any, method: str, y0: torch.Tensor, f_const: torch.Tensor, per_sample: bool):
    """One attempted step + controller verdict on fixed inputs, constant field."""
    term = tn.ODETerm(lambda t, y, args: f_const)
    solver = getattr(tn, method)()
    ctrl = tn.PIDController(rtol=1e-6, atol=1e-6, per_sample=per_sample)
    tdt = torch.float64 if y0.dtype == torch.float64 else torch.float32
    t0 = torch.zeros(y0.shape[0] if per_sample else (), dtype=tdt)
    t1 = t0 + 0.01
    state = solver.init(term, t0, y0, None)
    _, cstate, _ = ctrl.init(term, t0, t1, y0, t1 - t0, None, solver, state, None)
    order = solver.error_order

    def run() -> Any:
        y1, y_err, _, _ = solver.step(term, t0, t1, y0, None, state)
        return ctrl.adapt(t0, t1, y0, y1, y_err, order, cstate, None)

    return run


def solve_fn(tn: Any, method: str, y0: torch.Tensor, f_const: torch.Tensor, per_sample: bool):
    term = tn.ODETerm(lambda t, y, args: f_const)
    solver = getattr(tn, method)()
    ctrl = tn.PIDController(rtol=1e-6, atol=1e-6, per_sample=per_sample, dtmax=0.02)
    ts = torch.linspace(0, 1, 10, dtype=y0.dtype)
    if per_sample:
        ts = ts.expand(y0.shape[0], -1)

    def run() -> Any:
        return tn.solve(term, solver, 0.0, 1.0, y0, saveat=tn.SaveAt(ts=ts), controller=ctrl)

    return run


def real_solve(tn: Any, method: str, field: Any, y0: torch.Tensor, per_sample: bool, t1: float):
    term = tn.ODETerm(lambda t, y, args: field(y))
    ctrl = tn.PIDController(rtol=1e-6, atol=1e-6, per_sample=per_sample)
    ts = torch.linspace(0, t1, 10, dtype=y0.dtype)
    if per_sample:
        ts = ts.expand(y0.shape[0], -1)
    sol = tn.solve(
        term, getattr(tn, method)(), 0.0, t1, y0, saveat=tn.SaveAt(ts=ts), controller=ctrl
    )
    return sol.ys


def main() -> None:
    p = base_parser("per-step overhead of the explicit RK engine", "torchnde")
    p.add_argument("--baseline-rev", default=None, help="git revision timed as 'base'")
    p.add_argument("--bs", default="1,256,4096")
    p.add_argument("--methods", default="Dopri5,Tsit5")
    p.add_argument("--lorenz-n", type=int, default=100_000, help="0 skips the Lorenz rows")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--solve", action="store_true", help="also time whole solves")
    a = p.parse_args()
    set_threads(a.threads)
    import torchnde as tn

    libs: dict[str, Any] = {"now": tn}
    if a.baseline_rev:
        libs["base"] = load_baseline(a.baseline_rev)
    torch.manual_seed(0)
    net = torch_mlp(make_mlp_weights(32, 128, gain=8.0))
    for q in net.parameters():
        q.requires_grad_(False)
    work: list[tuple[str, torch.Tensor, Any, bool]] = []
    for b in (int(x) for x in a.bs.split(",")):
        y0 = torch.randn(b, 32)
        for ps in (False, True):
            work.append((f"mlp d=32 B={b}", y0, net, ps))
    if a.lorenz_n:
        pr, y0l = make_problem(a.lorenz_n)
        lor = Lorenz(torch.from_numpy(pr))
        work.append((f"lorenz N={a.lorenz_n}", torch.from_numpy(y0l), lambda y: lor(None, y), True))
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for name, y0, field, ps in work:
            f_const = field(y0)
            inner = max(3, min(200, int(2e5 / y0.numel())))
            for method in a.methods.split(","):
                fns: dict[str, Any] = {"field": lambda field=field, y0=y0: field(y0)}
                for lib, mod in libs.items():
                    fns[lib] = step_fn(mod, method, y0, f_const, ps)
                    if a.solve:
                        fns[lib + " solve"] = solve_fn(mod, method, y0, f_const, ps)
                res = time_rounds(fns, a.rounds, inner if not a.solve else max(1, inner // 20))
                row: dict[str, Any] = {
                    "workload": name,
                    "mode": "per-sample" if ps else "joint",
                    "method": method,
                    "field_us": res["field"] * 1e6,
                }
                for lib in libs:
                    row[f"{lib}_us"] = res[lib] * 1e6
                    row[f"{lib}_evals"] = res[lib] / res["field"]
                    if a.solve:
                        sol = fns[lib + " solve"]()
                        steps = int(torch.as_tensor(sol.stats["num_steps"]).max())
                        nfe = float(torch.as_tensor(sol.stats["num_fevals"]).max())
                        call = time_rounds({"c": lambda f_const=f_const: f_const}, 3, 200)["c"]
                        per = (res[lib + " solve"] - nfe * call) / steps
                        row[f"{lib}_solve_us"] = per * 1e6
                        row[f"{lib}_solve_evals"] = per / res["field"]
                if "base" in libs:
                    row["ratio"] = res["now"] / res["base"]
                rows.append(row)
                print(row, flush=True)
        # Numerics: the same real solve with both engines.
        diffs: list[dict[str, Any]] = []
        if "base" in libs:
            cases: list[tuple[str, Any, torch.Tensor, bool, float]] = [
                ("mlp d=32 B=256", net, torch.randn(256, 32), False, 1.0),
                ("mlp d=32 B=256", net, torch.randn(256, 32), True, 1.0),
            ]
            if a.lorenz_n:
                pr, y0l = make_problem(10_000)
                lor2 = Lorenz(torch.from_numpy(pr))
                cases.append(
                    ("lorenz N=1e4", lambda y: lor2(None, y), torch.from_numpy(y0l), True, 1.0)
                )
            for name, field, y0, ps, t1 in cases:
                for method in a.methods.split(","):
                    ys = {k: real_solve(m, method, field, y0, ps, t1) for k, m in libs.items()}
                    d = (ys["now"] - ys["base"]).abs().max().item()
                    scale = ys["base"].abs().max().item()
                    diffs.append(
                        {
                            "case": name,
                            "mode": "per-sample" if ps else "joint",
                            "method": method,
                            "max_abs_diff": d,
                            "max_abs": scale,
                        }  # fmt: skip
                    )
                    print(diffs[-1], flush=True)
    cols = [("workload", "workload", "s"), ("mode", "mode", "s"), ("method", "method", "s"),
            ("field_us", "field µs", "g")]  # fmt: skip
    for lib in libs:
        cols += [(f"{lib}_us", f"{lib} µs/step", "g"), (f"{lib}_evals", f"{lib} evals", "g")]
        if a.solve:
            cols += [(f"{lib}_solve_evals", f"{lib} solve evals", "g")]
    if "base" in libs:
        cols.append(("ratio", "now/base", "g"))
    print(markdown_table(rows, cols))
    out = write_json(
        "step_overhead", {"machine": machine_info(), "rows": rows, "diffs": diffs}, a.out
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
