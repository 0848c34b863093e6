"""ode_train: one neural-ODE training step (forward solve + loss + backward), per lib/mode.

torchnde, torchdiffeq and torchode run side by side in one process on the same vector field,
initial condition and save times. Per (library, gradient mode, d, tolerance) it reports the
median wall time of one training step, the vector-field calls made during the forward solve
and during ``loss.backward()``, the relative L2 error of the parameter gradient against a
tight reference, and the speed ratio  t_peer / t_torchnde  against torchnde's counterpart of
the same kind (backprop -> DirectAdjoint, adjoint -> BacksolveAdjoint; > 1: torchnde faster).

    .venv/bin/python benchmarks/ode_train.py --quick      # about 25 s
    .venv/bin/python benchmarks/ode_train.py              # full grid, about 2.7 min

Problem: tanh MLP with 2 hidden layers (d=2 -> width 64, d=32 -> width 128), weights
~ U(+-gain/sqrt(fan_in)), gain 8 (as in ode_solve.py), B=256, y0 ~ N(0, 1) (seed 1),
float32, dopri5, rtol = atol = tol, 10 save times on [0, 1] including 0,
loss = ys.pow(2).mean() over all save times, gradient w.r.t. the MLP parameters (their
.grad is set to None by the harness before every step). Each mode gets its own copy of the
MLP (same weights). Modes:

  torchdiffeq  backprop         odeint (autograd through the solver)
               adjoint          odeint_adjoint(adjoint_params=...) (backward solve, same tol)
               adjoint_seminorm the same with adjoint_options={"norm": "seminorm"} (the error
                                of the backward solve on (y, a) only, like torchnde's
                                BacksolveAdjoint default seminorm=True)
  torchode     backprop         AutoDiffAdjoint (its default: also through the dt controller)
               backprop_nodt    AutoDiffAdjoint(backprop_through_step_size_control=False)
               backsolve        BacksolveAdjoint (per-sample vmap'd adjoint)
               joint_backsolve  JointBacksolveAdjoint (one adjoint solve for the batch)
  torchnde     direct           DirectAdjoint (autograd through the solver, and through the
                                step-size choices: the exact derivative of the solution)
               direct_nodt      DirectAdjoint with PIDController(differentiate_steps=False):
                                the step sizes as constants, the peers' backprop convention
                                (its counterpart in the speed ratios when run)
               backsolve        BacksolveAdjoint            (when torchnde has it)
               interpolated     InterpolatedAdjoint         (when torchnde has it)
               checkpoint       CheckpointAdjoint           (when torchnde has it)

torchnde's adjoints are discovered at run time (getattr on torchnde); missing ones are
skipped with a note. They are built with their defaults plus params=<the MLP's parameters>
where the constructor takes ``params`` (as torchdiffeq gets adjoint_params). Reference
gradient: torchnde DirectAdjoint, dopri5, float64, rtol = atol = 1e-9 (cached in
benchmarks/.refcache/), cross-checked against torchdiffeq odeint (backprop) at the same
settings. Timing: round-robin over the modes of one configuration after one untimed call
each (which also gives the NFE and the gradient).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before numpy and torch.
from _common import (
    REF_CACHE_DIR,
    TORCHNDE_ADJOINTS,
    base_parser,
    hidden_for,
    machine_info,
    make_counting,
    make_mlp_weights,
    make_torchnde_adjoint,
    markdown_table,
    med_range,
    parse_list,
    set_threads,
    time_interleaved,
    torch_mlp,
    torchnde_adjoints,
    write_json,
)

# isort: split
import numpy as np

# (lib, mode) -> kind; the kind picks torchnde's counterpart for the speed ratio
PEER_MODES: dict[str, dict[str, str]] = {
    "torchdiffeq": {"backprop": "backprop", "adjoint": "adjoint", "adjoint_seminorm": "adjoint"},
    "torchode": {
        "backprop": "backprop",
        "backprop_nodt": "backprop",
        "backsolve": "adjoint",
        "joint_backsolve": "adjoint",
    },
}
COUNTERPART = {"backprop": "direct", "adjoint": "backsolve"}
REF_TOL = 1e-9

# a prepared training step: () -> per-call info (loss, NFE forward / backward, steps)
Step = Callable[[], dict[str, Any]]


# ------------------------------------------------------------------------------- libraries
def _finish(f, ys, info: dict[str, Any]) -> dict[str, Any]:
    """loss = mean(ys^2); backward; NFE during the forward (so far) and during backward."""
    nfe_fwd = f.nfe
    loss = ys.pow(2).mean()
    loss.backward()
    info.update(loss=float(loss.detach()), nfe_fwd=nfe_fwd, nfe_bwd=f.nfe - nfe_fwd)
    return info


def prep_torchnde(
    f, y0, t, tol, adjoint, differentiate_steps: bool = True, peer_steps: bool = False
) -> Step:
    import torchnde

    term = torchnde.ODETerm(lambda t_, y, args: f(t_, y))
    # peer_steps: the error estimate and step rule of torchdiffeq's dopri5 (their steps).
    solver = torchnde.Dopri5(error_estimate="shampine" if peer_steps else "dormand-prince")
    ctrl = torchnde.PIDController(
        rtol=tol, atol=tol, differentiate_steps=differentiate_steps,
        hold=(0.2, 1.0) if peer_steps else None,
    )  # fmt: skip
    saveat = torchnde.SaveAt(ts=t)
    t0, t1 = float(t[0]), float(t[-1])

    def step():
        f.reset()
        sol = torchnde.solve(
            term, solver, t0, t1, y0, saveat=saveat, controller=ctrl, adjoint=adjoint
        )
        st = sol.stats
        return _finish(f, sol.ys, {"n_steps": int(st["num_steps"])})

    return step


def prep_torchdiffeq(f, y0, t, tol, mode) -> Step:
    import torchdiffeq

    params = tuple(f.parameters())
    adj_opts = {"norm": "seminorm"} if mode == "adjoint_seminorm" else None

    def step():
        f.reset()
        if mode == "backprop":
            ys = torchdiffeq.odeint(f, y0, t, rtol=tol, atol=tol, method="dopri5")
        else:  # adjoint_rtol / atol / method default to the forward ones
            ys = torchdiffeq.odeint_adjoint(
                f,
                y0,
                t,
                rtol=tol,
                atol=tol,
                method="dopri5",
                adjoint_params=params,
                adjoint_options=adj_opts,
            )
        return _finish(f, ys, {"n_steps": f.n_steps})  # callback_step: attempted steps

    return step


def prep_torchode(f, y0, t, tol, mode) -> Step:
    """torchode steps each batch element on its own; steps are the batch maximum."""
    import torchode as to

    term = to.ODETerm(f)
    stepper = to.Dopri5(term=term)
    ctrl = to.IntegralController(atol=tol, rtol=tol, term=term)
    if mode == "backprop":
        solver = to.AutoDiffAdjoint(stepper, ctrl)
    elif mode == "backprop_nodt":
        solver = to.AutoDiffAdjoint(stepper, ctrl, backprop_through_step_size_control=False)
    elif mode == "backsolve":
        solver = to.BacksolveAdjoint(term, stepper, ctrl)
    elif mode == "joint_backsolve":
        solver = to.JointBacksolveAdjoint(term, stepper, ctrl)
    else:
        raise ValueError(mode)
    b, n = y0.shape[0], t.shape[0]
    prob = to.InitialValueProblem(y0=y0, t_eval=t.expand(b, n))

    def step():
        f.reset()
        sol = solver.solve(prob)
        if not bool((sol.status == 0).all()):
            raise RuntimeError(f"torchode status {sol.status.unique().tolist()}")
        return _finish(f, sol.ys, {"n_steps": int(sol.stats["n_steps"].max())})

    return step


# ------------------------------------------------------------------------------- reference
def _ref_key(tag: str, weights, y0_np, t_np, tol: float) -> str:
    h = hashlib.sha256(tag.encode())
    for a in [*weights, y0_np, t_np, np.array([tol])]:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return os.path.join(REF_CACHE_DIR, f"grad-{tag}-{h.hexdigest()[:20]}.npy")


def reference_grad(lib: str, weights, y0_np, t_np, cache: bool = True) -> tuple[np.ndarray, float]:
    """Parameter gradient of mean(ys^2), dopri5, float64, rtol = atol = REF_TOL, by backprop
    through the solver: ``lib`` = torchnde (DirectAdjoint) or torchdiffeq (odeint).
    Returns (gradient, seconds; 0 when read from the cache)."""
    import torch

    path = _ref_key(lib + "-dopri5", weights, y0_np, t_np, REF_TOL)
    if cache and os.path.exists(path):
        return np.load(path), 0.0
    t_start = time.perf_counter()
    net = torch_mlp(weights, torch.float64)
    y0 = torch.from_numpy(y0_np).double()
    t = torch.from_numpy(t_np).double()
    if lib == "torchnde":
        import torchnde

        sol = torchnde.solve(
            torchnde.ODETerm(lambda t_, y, args: net(y)),
            torchnde.Dopri5(),
            float(t[0]),
            float(t[-1]),
            y0,
            saveat=torchnde.SaveAt(ts=t),
            controller=torchnde.PIDController(rtol=REF_TOL, atol=REF_TOL),
            adjoint=torchnde.DirectAdjoint(),
        )
        ys = sol.ys
    else:
        import torchdiffeq

        ys = torchdiffeq.odeint(
            lambda t_, y: net(y), y0, t, rtol=REF_TOL, atol=REF_TOL, method="dopri5"
        )
    ys.pow(2).mean().backward()
    g = np.concatenate([q.grad.numpy().ravel() for q in net.parameters()])
    if cache:
        os.makedirs(REF_CACHE_DIR, exist_ok=True)
        ignore = os.path.join(REF_CACHE_DIR, ".gitignore")
        if not os.path.exists(ignore):
            with open(ignore, "w") as fh:
                fh.write("*\n")
        np.save(path, g)
    return g, time.perf_counter() - t_start


def relerr(g: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


# ------------------------------------------------------------------------------------ main
def parse_args():
    p = base_parser(__doc__.splitlines()[0], "torchnde,torchdiffeq,torchode")
    p.add_argument("--dims", default="2,32", help="state dims (default 2,32)")
    p.add_argument("--tols", default=None, help="rtol = atol values (default 1e-3,1e-6)")
    p.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    p.add_argument(
        "--modes",
        default=None,
        help="restrict to these modes: 'mode' or 'lib/mode', comma-separated "
        "(default: all; --quick leaves out torchode/backsolve)",
    )
    p.add_argument("--gain", type=float, default=8.0, help="MLP weight gain (default 8)")
    p.add_argument("--n-save", type=int, default=10, help="save points on [0, 1] (default 10)")
    p.add_argument(
        "--checkpoints",
        type=int,
        default=None,
        help="CheckpointAdjoint(checkpoints=...) (default: the adjoint's own default)",
    )
    p.add_argument(
        "--target-s",
        type=float,
        default=None,
        help="timing budget per mode and configuration, s (1.0; --quick 0.3)",
    )
    p.add_argument(
        "--min-repeats", type=int, default=None, help="min timed rounds (default 5; --quick 3)"
    )
    p.add_argument(
        "--slow-s",
        type=float,
        default=2.0,
        help="modes whose first step takes longer are timed alone (default 2 s)",
    )
    p.add_argument(
        "--slow-repeats", type=int, default=2, help="timed calls of such a mode (default 2)"
    )
    p.add_argument("--no-ref-cache", action="store_true", help="recompute the reference gradients")
    p.add_argument(
        "--peer-steps",
        action="store_true",
        help="torchnde's Dopri5 with the peers' error estimate (Shampine's) and step rule "
        "(never shrink after an accepted step): torchdiffeq's steps",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tol 1e-3 only, shorter timing, no torchode/backsolve; grid flags still apply",
    )
    a = p.parse_args()
    if a.tols is None:
        a.tols = "1e-3" if a.quick else "1e-3,1e-6"
    if a.target_s is None:
        a.target_s = 0.3 if a.quick else 1.0
    if a.min_repeats is None:
        a.min_repeats = 3 if a.quick else 5
    if a.modes is None and a.quick:
        a.modes = "-torchode/backsolve"
    return a


def select_modes(libs: list[str], modes_arg: str | None, checkpoints) -> tuple[list, list[str]]:
    """[(lib, mode, kind, factory)], notes. ``modes_arg``: names 'mode' or 'lib/mode'; a
    leading '-' excludes (only exclusions: everything else is kept)."""
    items = parse_list(modes_arg) if modes_arg else []
    excl = {x[1:] for x in items if x.startswith("-")}
    incl = {x for x in items if not x.startswith("-")}

    def keep(lib: str, mode: str) -> bool:
        names = {mode, f"{lib}/{mode}"}
        if names & excl:
            return False
        return not incl or bool(names & incl)

    plan, notes = [], []
    if "torchnde" in libs:
        have, notes = torchnde_adjoints()
        kinds = {name: kind for name, _, kind in TORCHNDE_ADJOINTS}
        for name, cls in have.items():
            if keep("torchnde", name):
                plan.append(("torchnde", name, kinds[name], cls))
        # DirectAdjoint with the step sizes chosen as constants (differentiate_steps=False):
        # the peers' backprop convention, so the same work as theirs.
        if "direct" in have and keep("torchnde", "direct_nodt"):
            plan.append(("torchnde", "direct_nodt", kinds["direct"], have["direct"]))
    for lib in libs:
        if lib == "torchnde":
            continue
        if lib not in PEER_MODES:
            raise SystemExit(f"unknown lib {lib!r}; known: torchnde, {', '.join(PEER_MODES)}")
        for mode, kind in PEER_MODES[lib].items():
            if keep(lib, mode):
                plan.append((lib, mode, kind, None))
    return plan, notes


def main() -> None:
    args = parse_args()
    set_threads(args.threads)
    import torch

    libs = parse_list(args.libs)
    plan, notes = select_modes(libs, args.modes, args.checkpoints)
    for n in notes:
        print(f"note: {n}")
    meta = machine_info()
    meta.update(
        gain=args.gain,
        batch=args.batch,
        n_save=args.n_save,
        threads=args.threads,
        peer_steps=args.peer_steps,
        notes=notes,
        modes=[f"{lib}/{m} ({k})" for lib, m, k, _ in plan],
        timing=(
            "round-robin over modes per configuration after one untimed call each; median of "
            f">= {args.min_repeats} rounds (>= 3 when a step takes > 0.05 s) and >= "
            f"{args.target_s}s per mode; perf_counter; grads set to None before each step"
        ),
        reference=f"torchnde DirectAdjoint dopri5 float64 rtol=atol={REF_TOL:g}; "
        "cross-check torchdiffeq odeint (backprop), same settings",
    )
    t_np = np.linspace(0.0, 1.0, args.n_save)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for d in parse_list(args.dims, int):
        h = hidden_for(d)
        weights = make_mlp_weights(d, h, seed=0, gain=args.gain)
        y0_np = np.random.default_rng(1).standard_normal((args.batch, d)).astype(np.float32)
        g_ref, ref_s = reference_grad("torchnde", weights, y0_np, t_np, not args.no_ref_cache)
        g_x, x_s = reference_grad("torchdiffeq", weights, y0_np, t_np, not args.no_ref_cache)
        ref_check = relerr(g_x, g_ref)
        print(
            f"[{time.perf_counter() - t_start:6.1f}s] d={d}: reference gradient "
            f"({ref_s:.1f}s + {x_s:.1f}s); torchdiffeq vs torchnde reference: {ref_check:.1e}",
            flush=True,
        )
        y0 = torch.from_numpy(y0_np)
        t = torch.from_numpy(t_np).float()
        for tol in parse_list(args.tols, float):
            cell = dict(d=d, hidden=h, B=args.batch, dtype="float32", tol=tol, gain=args.gain)
            cell_rows = run_cell(cell, plan, weights, y0, t, g_ref, args)
            for r in cell_rows:
                r["ref_crosscheck_relerr"] = ref_check
            rows.extend(cell_rows)
            brief = "  ".join(
                f"{r['lib']}/{r['mode']}="
                + (f"{r['time_s'] * 1e3:.0f}ms" if "time_s" in r else "ERR")
                for r in cell_rows
            )
            print(f"[{time.perf_counter() - t_start:6.1f}s] d={d} tol={tol:g}: {brief}", flush=True)

    total = time.perf_counter() - t_start
    meta["loadavg_at_end"] = os.getloadavg()
    summary = report(rows, notes)
    out = write_json(
        "ode_train", {"meta": meta, "total_s": total, "rows": rows, "summary": summary}, args.out
    )
    print(f"\ntotal {total:.1f}s; wrote {os.path.relpath(out)}")


def run_cell(cell, plan, weights, y0, t, g_ref, args) -> list[dict[str, Any]]:
    """Prepare every mode of one configuration, make one untimed call each (NFE, gradient),
    then time them round-robin."""
    tol = cell["tol"]
    rows: dict[str, dict[str, Any]] = {}
    fns: dict[str, Callable[[], Any]] = {}
    for lib, mode, kind, cls in plan:
        key = f"{lib}/{mode}"
        row = dict(lib=lib, mode=mode, kind=kind, **cell)
        rows[key] = row
        f = make_counting(torch_mlp(weights))  # own copy of the MLP per mode
        params = list(f.parameters())
        try:
            if lib == "torchnde":
                base_mode = "direct" if mode == "direct_nodt" else mode
                adjoint = make_torchnde_adjoint(base_mode, cls, args.checkpoints, params)
                row["adjoint"] = repr(adjoint)
                step = prep_torchnde(f, y0, t, tol, adjoint, mode != "direct_nodt", args.peer_steps)
            elif lib == "torchdiffeq":
                step = prep_torchdiffeq(f, y0, t, tol, mode)
            else:
                step = prep_torchode(f, y0, t, tol, mode)

            def train_step(step=step, params=params) -> dict[str, Any]:
                for q in params:
                    q.grad = None
                return step()

            t1 = time.perf_counter()
            info = train_step()  # untimed: warm-up, NFE, gradient
            row["first_call_s"] = time.perf_counter() - t1
            row.update(info)
            g = np.concatenate([q.grad.detach().double().numpy().ravel() for q in params])
            row["grad_relerr"] = relerr(g, g_ref)
            fns[key] = train_step
        except Exception as e:  # record and keep going
            row["error"] = f"{type(e).__name__}: {e}"[:300]
    # modes whose first step took longer than --slow-s (torchode's per-sample BacksolveAdjoint
    # at d=32: 6-12 s) are timed on their own, so they do not stretch every round
    slow = {k: fn for k, fn in fns.items() if rows[k]["first_call_s"] > args.slow_s}
    fast = {k: fn for k, fn in fns.items() if k not in slow}
    tm: dict[str, dict[str, float]] = {}
    if fast:
        tm.update(
            time_interleaved(
                fast, min_rounds=args.min_repeats, slow_min_rounds=3, target_s=args.target_s
            )
        )
    for k, fn in slow.items():
        n = args.slow_repeats
        tm.update(time_interleaved({k: fn}, min_rounds=n, max_rounds=n, target_s=0.0))
        rows[k]["timing"] = f"alone, {args.slow_repeats} calls (first call > {args.slow_s:g}s)"
    for key, s in tm.items():
        rows[key].update(
            time_s=s["median"],
            time_q1=s["q1"],
            time_q3=s["q3"],
            repeats=s["n"],
            cpu_s=s["cpu_median"],
        )
    direct = rows.get("torchnde/direct", {})
    for row in rows.values():
        if "time_s" in row and "time_s" in direct:
            row["ratio_vs_direct"] = row["time_s"] / direct["time_s"]
    for row in rows.values():
        if row["lib"] == "torchnde" or "time_s" not in row:
            continue
        mode = COUNTERPART.get(row["kind"], "")
        if mode == "direct" and "torchnde/direct_nodt" in rows:
            mode = "direct_nodt"  # the same convention as the peers' backprop
        base = rows.get(f"torchnde/{mode}")
        if base and "time_s" in base:
            row["vs"] = f"torchnde/{base['mode']}"
            row["ratio_vs_torchnde"] = row["time_s"] / base["time_s"]
            row["ratio_vs_torchnde_cpu"] = row["cpu_s"] / base["cpu_s"]
    return list(rows.values())


# ---------------------------------------------------------------------------------- report
def report(rows: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    cols = [
        ("lib", "lib", "s"),
        ("mode", "mode", "s"),
        ("d", "d", "g"),
        ("tol", "tol", "e"),
        ("time_s", "step ms", "ms"),
        ("nfe_fwd", "NFE fwd", "g"),
        ("nfe_bwd", "NFE bwd", "g"),
        ("n_steps", "steps", "g"),
        ("grad_relerr", "grad rel err", "e"),
        ("vs", "vs", "s"),
        ("ratio_vs_torchnde", "t/t_tnde", "x"),
        ("ratio_vs_direct", "t/t_direct", "x"),
    ]
    print("\n## All rows\n")
    print(markdown_table(rows, cols))
    for r in rows:
        if "error" in r:
            print(f"ERROR {r['lib']}/{r['mode']} d={r['d']} tol={r['tol']}: {r['error']}")

    cells = []
    for r in rows:
        if (r["d"], r["tol"]) not in cells:
            cells.append((r["d"], r["tol"]))
    summary: dict[str, Any] = {"ratio": {}, "ratio_cpu": {}}
    out_rows = []
    for lib, mode in dict.fromkeys((r["lib"], r["mode"]) for r in rows if r["lib"] != "torchnde"):
        for key, skey in (("ratio_vs_torchnde", "ratio"), ("ratio_vs_torchnde_cpu", "ratio_cpu")):
            sel = [r for r in rows if r["lib"] == lib and r["mode"] == mode and key in r]
            if not sel:
                continue
            vs = sel[0]["vs"]
            row = {"ratio": f"{lib}/{mode} / {vs}" + (" (CPU)" if skey == "ratio_cpu" else "")}
            for r in sel:
                row[f"d={r['d']} {r['tol']:g}"] = r[key]
            v = [r[key] for r in sel]
            row["all"] = med_range(v)
            summary[skey][f"{lib}/{mode}"] = statistics.median(v)
            out_rows.append(row)
    if out_rows:
        print("\n## Speed ratio t_peer / t_torchnde, same kind (> 1: torchnde faster)\n")
        hdr = [("ratio", "ratio", "s")]
        hdr += [(f"d={d} {tol:g}", f"d={d} {tol:g}", "x") for d, tol in cells]
        print(markdown_table(out_rows, hdr + [("all", "median [min–max]", "s")]))
    timed = [r for r in rows if "time_s" in r]
    if timed:
        share = sum(r["cpu_s"] for r in timed) / sum(r["time_s"] for r in timed)
        summary["cpu_share"] = share
        print(
            f"\nCPU share of the timed steps (process CPU time / wall): {share:.2f}"
            + ("" if share > 0.9 else "  -- below 0.9: the machine was busy, wall times inflated")
        )
    for n in notes:
        print(f"Note: {n}")
    print(
        "Notes: NFE fwd = vf calls during the solve, NFE bwd = vf calls during loss.backward() "
        "(recomputation and adjoint solves); steps are attempted forward steps (torchode: max "
        "over the batch). grad rel err = ||g - g_ref|| / ||g_ref|| vs torchnde DirectAdjoint "
        f"float64 at {REF_TOL:g}."
    )
    return summary


if __name__ == "__main__":
    main()
