"""memory_scaling: peak memory of one forward + backward pass vs the number of fixed steps.

    .venv/bin/python benchmarks/memory_scaling.py --quick    # n in {10, 100}: about 30 s
    .venv/bin/python benchmarks/memory_scaling.py            # n up to 1000: about 4.4 min

Problem: fixed-step RK4 on [0, 1] with dt0 = 1/n, n in {10, 30, 100, 300, 1000}, B=1024,
d=32, tanh MLP 32 -> 64 -> 64 -> 32 (weight gain 1), float32, y0 ~ N(0, 1) (seed 1), save
times {0, 1}, loss = ys.pow(2).mean(), gradient w.r.t. the MLP parameters. Modes:

  torchnde     direct / checkpoint / backsolve / interpolated: solve(ODETerm, RK4(), 0, 1,
               y0, dt0=1/n, controller=ConstantStepSize(), adjoint=<...>), for each adjoint
               torchnde has (found with getattr at run time; missing ones are skipped)
  torchdiffeq  backprop: odeint(method="rk4", options={"step_size": 1/n})
               adjoint:  odeint_adjoint(..., adjoint_params=...) (rk4 backwards, same step)

Every (mode, n) runs in its own process, so peaks cannot contaminate each other: a child
forked from a parent that has only imported torch / torchnde / torchdiffeq (no computation
before the fork), or with --spawn a fresh interpreter. The child builds the problem,
switches glibc to return freed memory to the OS at once (mallopt M_MMAP_THRESHOLD = 64 KiB,
M_TRIM_THRESHOLD = 128 KiB), makes one warm-up forward + backward pass with min(n, 10) steps
(kernel caches, lazy imports), runs gc and malloc_trim, resets the kernel's VmHWM
(/proc/self/clear_refs) and runs the measured pass: peak+ = VmHWM - VmRSS before it, the
live memory one training step needs above what the process already held. The reported step
time is that one measured call (release mode mmaps every tensor of >= 64 KiB, which makes
the pass slower than in normal use).
--alloc baselines reproduces shared/bench's protocol instead (full-size warm-up pass with
glibc's default thresholds, release mode only afterwards): the measured pass then reuses
the heap that pass grew and peak+ also holds glibc's heap overhead (about 1.7x the live
memory for the backprop modes).

A configuration is skipped when its peak, extrapolated linearly from the mode's last two
measured n, would exceed --max-mib (default 6000) or half of MemAvailable, or when its
time extrapolated the same way would exceed --max-step-s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before numpy and torch.
from _common import (
    base_parser,
    child_emit,
    machine_info,
    make_counting,
    make_mlp_weights,
    make_torchnde_adjoint,
    malloc_release_mode,
    markdown_table,
    measure_peak_rss,
    mem_available_mib,
    parse_list,
    rss_mib,
    run_child,
    run_forked,
    set_threads,
    torch_mlp,
    torchnde_adjoints,
    write_json,
)

# isort: split
import numpy as np

PEER_MODES = {"torchdiffeq": ["backprop", "adjoint"]}


# ----------------------------------------------------------------------------------- child
def child(cfg: dict[str, Any]) -> dict[str, Any]:
    """One (mode, n), in a forked child or a fresh interpreter."""
    set_threads(cfg["threads"])
    import torch

    lib, mode, n = cfg["lib"], cfg["mode"], cfg["n"]
    weights = make_mlp_weights(cfg["d"], cfg["hidden"], seed=0, gain=cfg["gain"])
    f = make_counting(torch_mlp(weights))
    params = list(f.parameters())
    y0 = torch.from_numpy(
        np.random.default_rng(1).standard_normal((cfg["B"], cfg["d"])).astype(np.float32)
    )
    t = torch.tensor([0.0, 1.0])
    res: dict[str, Any] = {"rss_after_setup_mib": rss_mib()}

    if lib == "torchnde":
        import torchnde

        cls = getattr(torchnde, cfg["adjoint_attr"])
        adjoint = make_torchnde_adjoint(mode, cls, cfg.get("checkpoints"), params)
        res["adjoint"] = repr(adjoint)
        term = torchnde.ODETerm(lambda t_, y, args: f(t_, y))
        solver, ctrl = torchnde.RK4(), torchnde.ConstantStepSize()
        saveat = torchnde.SaveAt(ts=t)

        def forward(k: int):
            sol = torchnde.solve(
                term,
                solver,
                0.0,
                1.0,
                y0,
                dt0=1.0 / k,
                saveat=saveat,
                controller=ctrl,
                adjoint=adjoint,
            )
            return sol.ys, int(sol.stats["num_steps"])
    else:
        import warnings

        import torchdiffeq

        # the counting module has torchdiffeq's step callbacks, which rk4 does not call
        warnings.filterwarnings("ignore", message="Solver 'rk4' does not support callbacks")

        def forward(k: int):
            opts = {"step_size": 1.0 / k}
            if mode == "backprop":
                ys = torchdiffeq.odeint(f, y0, t, method="rk4", options=opts)
            else:  # adjoint_method / adjoint_options default to the forward ones
                ys = torchdiffeq.odeint_adjoint(
                    f, y0, t, method="rk4", options=opts, adjoint_params=tuple(params)
                )
            return ys, None

    info: dict[str, Any] = {}

    def step(k: int) -> None:
        for q in params:
            q.grad = None
        f.reset()
        ys, steps = forward(k)
        nfe_fwd = f.nfe
        loss = ys.pow(2).mean()
        loss.backward()
        info.update(loss=float(loss.detach()), nfe_fwd=nfe_fwd, nfe_bwd=f.nfe - nfe_fwd)
        info["n_steps"] = steps if steps is not None else nfe_fwd // 4

    if cfg.get("alloc") == "baselines":
        # the shared/bench protocol: full-size pass(es) with glibc's default (dynamic)
        # thresholds first, release mode only afterwards; the measured pass then reuses the
        # heap those passes grew, and peak+ includes glibc's heap overhead
        t0 = time.perf_counter()
        step(n)
        res["warmup_s"] = time.perf_counter() - t0
        res["malloc_release_mode"] = malloc_release_mode()
    else:
        # release mode from the start: peak+ is the live memory of the pass
        res["malloc_release_mode"] = malloc_release_mode()
        t0 = time.perf_counter()
        step(min(n, 10))  # warm-up: allocator, oneDNN/MKL caches, lazy imports
        res["warmup_s"] = time.perf_counter() - t0
    for q in params:
        q.grad = None
    mem = measure_peak_rss(lambda: step(n))
    res.update(info)
    res.update(
        rss_before_mib=mem["rss_before_mib"],
        peak_inc_mib=mem["peak_increase_mib"],
        hwm_reset=mem["hwm_reset"],
        time_s=mem["measured_call_s"],
    )
    return res


# ---------------------------------------------------------------------------------- parent
def parse_args():
    p = base_parser(__doc__.splitlines()[0], "torchnde,torchdiffeq")
    p.add_argument("--steps", default=None, help="numbers of steps (default 10,30,100,300,1000)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--gain", type=float, default=1.0, help="MLP weight gain (default 1)")
    p.add_argument("--modes", default=None, help="only these modes ('mode' or 'lib/mode')")
    p.add_argument(
        "--checkpoints",
        type=int,
        default=None,
        help="CheckpointAdjoint(checkpoints=...) (default: its own, recursive bisection)",
    )
    p.add_argument(
        "--max-mib",
        type=float,
        default=6000.0,
        help="skip a configuration whose extrapolated peak exceeds this (default 6000 MiB)",
    )
    p.add_argument(
        "--max-step-s",
        type=float,
        default=60.0,
        help="skip a configuration whose extrapolated step time exceeds this (default 60 s)",
    )
    p.add_argument(
        "--alloc",
        choices=["release", "baselines"],
        default="release",
        help="release (default): glibc release mode before the warm-up, peak+ = live memory; "
        "baselines: shared/bench's protocol (full-size warm-up pass with default malloc "
        "first), which adds glibc heap overhead",
    )
    p.add_argument(
        "--spawn",
        action="store_true",
        help="run each configuration in a fresh interpreter instead of a forked child of a "
        "parent that has imported torch (same numbers, about 2 s more per configuration)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="per child, s (default 300)")
    p.add_argument("--quick", action="store_true", help="n in {10, 100} (unless --steps)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.steps is None:
        a.steps = "10,100" if a.quick else "10,30,100,300,1000"
    return a


def plan_modes(libs: list[str], modes_arg: str | None) -> tuple[list[tuple[str, str, str]], list]:
    """[(lib, mode, torchnde attribute or '')], notes."""
    wanted = set(parse_list(modes_arg)) if modes_arg else None

    def keep(lib: str, mode: str) -> bool:
        return wanted is None or bool({mode, f"{lib}/{mode}"} & wanted)

    plan: list[tuple[str, str, str]] = []
    notes: list[str] = []
    if "torchnde" in libs:
        have, notes = torchnde_adjoints()
        for name, cls in have.items():
            if keep("torchnde", name):
                plan.append(("torchnde", name, cls.__name__))
    for lib in libs:
        if lib == "torchnde":
            continue
        if lib not in PEER_MODES:
            raise SystemExit(f"unknown lib {lib!r}; known: torchnde, {', '.join(PEER_MODES)}")
        plan += [(lib, m, "") for m in PEER_MODES[lib] if keep(lib, m)]
    return plan, notes


def _extrapolate(pts: list[tuple[int, float]], n: int) -> float | None:
    """Linear extrapolation to n from the last two points (one point: proportional)."""
    if not pts:
        return None
    if len(pts) == 1:
        n0, v0 = pts[0]
        return v0 * n / n0
    (n0, v0), (n1, v1) = pts[-2], pts[-1]
    return v1 + (v1 - v0) / (n1 - n0) * (n - n1)


def slope_per_100(pts: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of peak+ vs n, MiB per 100 steps."""
    if len(pts) < 2:
        return None
    n = np.array([p[0] for p in pts], dtype=float)
    v = np.array([p[1] for p in pts], dtype=float)
    return float(np.polyfit(n, v, 1)[0] * 100)


def main() -> None:
    args = parse_args()
    if args.child:
        child_emit(child(json.loads(args.child)))
        return
    set_threads(args.threads)
    libs = parse_list(args.libs)
    plan, notes = plan_modes(libs, args.modes)
    if not args.spawn:  # import once here; every forked child starts with them loaded
        import torch  # noqa: F401
        import torchdiffeq  # noqa: F401

        import torchnde  # noqa: F401
    for note in notes:
        print(f"note: {note}")
    steps = parse_list(args.steps, int)
    meta = machine_info()
    meta.update(
        batch=args.batch,
        d=args.d,
        hidden=args.hidden,
        gain=args.gain,
        threads=args.threads,
        notes=notes,
        max_mib=args.max_mib,
        alloc=args.alloc,
        mem_available_mib_at_start=mem_available_mib(),
        method="torchnde RK4 (classic) / torchdiffeq 'rk4' (3/8 rule), 4 vf calls per step",
        memory=(
            ("fresh interpreter" if args.spawn else "forked child (parent: imports only)")
            + " per (mode, n); "
            + (
                "glibc release mode (mallopt), then a warm-up pass with min(n, 10) steps; "
                if args.alloc == "release"
                else "warm-up pass with n steps (default malloc), then glibc release mode; "
            )
            + "gc + malloc_trim; VmHWM reset via /proc/self/clear_refs; "
            "peak_inc_mib = VmHWM - VmRSS before the measured pass"
        ),
    )
    script = os.path.abspath(__file__)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for lib, mode, attr in plan:
        mem_pts: list[tuple[int, float]] = []
        time_pts: list[tuple[int, float]] = []
        for n in steps:
            row: dict[str, Any] = dict(lib=lib, mode=mode, n=n)
            limit = min(args.max_mib, 0.5 * mem_available_mib())
            pred_mib = _extrapolate(mem_pts, n)
            pred_s = _extrapolate(time_pts, n)
            if pred_mib is not None and pred_mib > limit:
                row["skipped"] = f"predicted {pred_mib:.0f} MiB > {limit:.0f} MiB"
            elif pred_s is not None and pred_s > args.max_step_s:
                row["skipped"] = f"predicted {pred_s:.0f} s > --max-step-s {args.max_step_s:g}"
            else:
                cfg = dict(
                    lib=lib,
                    mode=mode,
                    adjoint_attr=attr,
                    n=n,
                    d=args.d,
                    hidden=args.hidden,
                    B=args.batch,
                    gain=args.gain,
                    threads=args.threads,
                    checkpoints=args.checkpoints,
                    alloc=args.alloc,
                )
                if args.spawn:
                    row.update(run_child(script, cfg, timeout=args.timeout))
                else:
                    row.update(run_forked(child, cfg, timeout=args.timeout))
            rows.append(row)
            el = time.perf_counter() - t_start
            if "peak_inc_mib" in row:
                mem_pts.append((n, row["peak_inc_mib"]))
                time_pts.append((n, row["time_s"]))
                print(
                    f"[{el:6.1f}s] {lib}/{mode:12s} n={n:<5d} peak+={row['peak_inc_mib']:8.1f} MiB"
                    f"  step={row['time_s']:.2f}s  nfe fwd/bwd={row['nfe_fwd']}/{row['nfe_bwd']}",
                    flush=True,
                )
            else:
                why = row.get("skipped") or row.get("error", "")[-400:]
                print(f"[{el:6.1f}s] {lib}/{mode:12s} n={n:<5d} {why}", flush=True)
    total = time.perf_counter() - t_start
    meta["loadavg_at_end"] = os.getloadavg()
    summary = report(rows, plan, steps, notes)
    out = write_json(
        "memory_scaling",
        {"meta": meta, "total_s": total, "rows": rows, "summary": summary},
        args.out,
    )
    print(f"\ntotal {total:.1f}s; wrote {os.path.relpath(out)}")


def report(rows, plan, steps, notes) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    mem_rows, time_rows = [], []
    for lib, mode, _ in plan:
        sel = [r for r in rows if r["lib"] == lib and r["mode"] == mode]
        pts = [(r["n"], r["peak_inc_mib"]) for r in sel if "peak_inc_mib" in r]
        mrow: dict[str, Any] = {"mode": f"{lib}/{mode}"}
        trow: dict[str, Any] = {"mode": f"{lib}/{mode}"}
        for r in sel:
            key = f"n={r['n']}"
            if "peak_inc_mib" in r:
                mrow[key] = f"{r['peak_inc_mib']:.1f}"
                trow[key] = f"{r['time_s']:.2f}"
            else:
                mrow[key] = trow[key] = "skip" if "skipped" in r else "err"
        s = slope_per_100(pts)
        mrow["slope"] = "-" if s is None else f"{s:.1f}"
        nfe = [(r["nfe_fwd"], r["nfe_bwd"]) for r in sel if r["n"] == max(steps) and "nfe_fwd" in r]
        trow["nfe"] = f"{nfe[0][0]} / {nfe[0][1]}" if nfe else "-"
        mem_rows.append(mrow)
        time_rows.append(trow)
        summary[f"{lib}/{mode}"] = {
            "peak_inc_mib": {str(n): v for n, v in pts},
            "slope_mib_per_100_steps": s,
        }
    ncols = [(f"n={n}", f"n={n}", "s") for n in steps]
    print("\n## Peak memory increase of one forward + backward pass, MiB\n")
    print(
        markdown_table(
            mem_rows,
            [("mode", "mode", "s"), *ncols, ("slope", "MiB / 100 steps", "s")],
        )
    )
    print("\n## Time of the measured pass, s (one call, glibc release mode)\n")
    print(
        markdown_table(
            time_rows,
            [("mode", "mode", "s"), *ncols, ("nfe", f"NFE fwd / bwd at n={max(steps)}", "s")],
        )
    )
    for r in rows:
        if "error" in r:
            print(f"ERROR {r['lib']}/{r['mode']} n={r['n']}: {r['error'][-600:]}")
    for note in notes:
        print(f"Note: {note}")
    print(
        "Notes: slope = least-squares slope of peak+ over the measured n. 'skip': the "
        "extrapolated peak or time was over the limit (--max-mib, --max-step-s)."
    )
    return summary


if __name__ == "__main__":
    main()
