"""ode_solve: adaptive solve of an MLP neural-ODE vector field, no gradients.

torchnde, torchdiffeq and torchode run side by side in one process on the same vector field,
initial condition and save times. Per (library, method, d, batch, dtype, tolerance) it reports
the median wall time, NFE, steps, the max abs error vs a scipy DOP853 reference
(rtol = atol = 1e-12, float64), the overhead ratio  wall / (NFE * t_vf), the time spent
outside the vector field per attempted step  (wall - NFE * t_vf) / steps, and the speed
ratio  t_lib / t_torchnde  (> 1: torchnde is faster).

    .venv/bin/python benchmarks/ode_solve.py --quick      # < 1 min
    .venv/bin/python benchmarks/ode_solve.py              # full grid, about 1.5-2 min

Vector field: tanh MLP with 2 hidden layers (d=2 -> width 64, d=32 -> width 128), weights
~ U(+-gain/sqrt(fan_in)) with gain 8 by default (gain 1 gives only 2-4 steps even at 1e-6).
y0 ~ N(0, 1) (seed 1), 10 save times on [0, 1] including 0. All solves run under
torch.no_grad(); t_vf is the median time of one bare call of the same (counting) module at
the same batch and dtype, timed in blocks inside the same round-robin as the solves. The
libraries are timed round-robin within each configuration (warm-up call first, then median
of >= 5 rounds (--quick: 3) and at least --target-s seconds per library). Process CPU time
is recorded next to wall time: on a busy machine the ratios on CPU time are the more
stable ones.
"""

from __future__ import annotations

import inspect
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before numpy and torch.
from _common import (
    base_parser,
    hidden_for,
    machine_info,
    make_counting,
    make_mlp_weights,
    markdown_table,
    med_range,
    parse_list,
    scipy_reference,
    set_threads,
    time_interleaved,
    torch_mlp,
    write_json,
)

# isort: split
import numpy as np

LIB_METHODS = {
    "torchnde": {"dopri5", "tsit5", "adams"},
    "torchdiffeq": {"dopri5"},  # torchdiffeq has no tsit5
    "torchode": {"dopri5", "tsit5"},
}
COMPILED_VF = "torchnde+cvf"  # --compile: torchnde, eager loop, torch.compile'd vf module
COMPILED_STEP = "torchnde+cstep"  # --compile: torchnde's own compile option (compile_step=True)
REF_LIB = "torchnde"

Runner = Callable[[], tuple[Any, dict[str, Any]]]


# ------------------------------------------------------------------------------- libraries
def torchnde_compile_support() -> str | None:
    """Name of a compile option of torchnde.solve, if it has one."""
    import torchnde

    params = inspect.signature(torchnde.solve).parameters
    for name in ("compile_step", "compile", "jit", "compiled"):
        if name in params:
            return name
    return None


def prep_torchnde(f, y0, t, method, tol, compile_kw: str | None = None) -> Runner:
    """``compile_kw``: torchnde's compile option, set to True. The step is then traced by
    torch.compile, vf included, so ``f`` is the bare MLP: the counting wrapper's
    ``nfe += 1`` would make dynamo recompile on every call (NFE comes from the stats)."""
    import torchnde

    if compile_kw:
        term = torchnde.ODETerm(lambda t_, y, args: f(y))
    else:
        term = torchnde.ODETerm(lambda t_, y, args: f(t_, y))
    solver = {"dopri5": torchnde.Dopri5, "tsit5": torchnde.Tsit5, "adams": torchnde.Adams}[method]()
    ctrl = torchnde.PIDController(rtol=tol, atol=tol)
    saveat = torchnde.SaveAt(ts=t)
    t0, t1 = float(t[0]), float(t[-1])
    extra = {compile_kw: True} if compile_kw else {}

    def run():
        sol = torchnde.solve(term, solver, t0, t1, y0, saveat=saveat, controller=ctrl, **extra)
        st = sol.stats
        return sol.ys, {
            "n_steps": int(st["num_steps"]),
            "n_accepted": int(st["num_accepted_steps"]),
            "n_rejected": int(st["num_rejected_steps"]),
            "lib_nfe": int(st["num_fevals"]),
        }

    return run


def prep_torchdiffeq(f, y0, t, method, tol) -> Runner:
    import torchdiffeq

    def run():
        ys = torchdiffeq.odeint(f, y0, t, rtol=tol, atol=tol, method=method)
        # attempted / accepted / rejected steps via torchdiffeq's callback hooks on f
        return ys, {"n_steps": f.n_steps, "n_accepted": f.n_accepted, "n_rejected": f.n_rejected}

    return run


def prep_torchode(f, y0, t, method, tol) -> Runner:
    """torchode solves each batch element as its own IVP (own step size and accept/reject);
    every vf call still evaluates the whole batch. Steps/NFE reported are the batch maxima."""
    import torchode as to

    term = to.ODETerm(f)
    step = {"dopri5": to.Dopri5, "tsit5": to.Tsit5}[method](term=term)
    ctrl = to.IntegralController(atol=tol, rtol=tol, term=term)
    solver = to.AutoDiffAdjoint(step, ctrl)
    b, n = y0.shape[0], t.shape[0]
    prob = to.InitialValueProblem(y0=y0, t_eval=t.expand(b, n))  # t_eval: (batch, n)

    def run():
        sol = solver.solve(prob)
        if not bool((sol.status == 0).all()):
            raise RuntimeError(f"torchode status {sol.status.unique().tolist()}")
        st = sol.stats
        return sol.ys.transpose(0, 1), {  # (batch, n, d) -> (n, batch, d)
            "n_steps": int(st["n_steps"].max()),
            "n_accepted": int(st["n_accepted"].max()),
            "n_steps_mean": float(st["n_steps"].float().mean()),
            "lib_nfe": int(st["n_f_evals"].max()),
        }

    return run


def vf_block(f, t, y0, block_s: float = 0.01) -> tuple[Callable[[], None], int]:
    """A function making k bare no-grad calls f(t0, y0) of the counting module the solvers
    call (k chosen so that one block takes about ``block_s``), and k. It is timed in the
    same round-robin as the solves and ``block_s`` is about one solve's time, so that t_vf
    sees the same machine state (and the same share of preemptions on a busy machine)."""
    import torch

    t0 = t[0]
    with torch.no_grad():
        f(t0, y0)
        c = time.perf_counter()
        for _ in range(5):
            f(t0, y0)
        one = (time.perf_counter() - c) / 5
    k = max(3, min(5000, int(block_s / max(one, 1e-7))))

    def block() -> None:
        for _ in range(k):
            f(t0, y0)

    return block, k


# ------------------------------------------------------------------------------------ main
def parse_args():
    p = base_parser(__doc__.splitlines()[0], "torchnde,torchdiffeq,torchode")
    p.add_argument("--dims", default=None, help="state dims (default 2,32)")
    p.add_argument("--batches", default=None, help="batch sizes (default 1,256)")
    p.add_argument("--dtypes", default=None, help="default float32,float64")
    p.add_argument("--tols", default=None, help="rtol = atol values (default 1e-3,1e-6)")
    p.add_argument("--methods", default="dopri5,tsit5")
    p.add_argument("--gain", type=float, default=8.0, help="MLP weight gain (default 8)")
    p.add_argument("--n-save", type=int, default=10, help="save points on [0, 1] (default 10)")
    p.add_argument(
        "--target-s",
        type=float,
        default=None,
        help="timing budget per lib and configuration, s (0.5; --quick 0.1)",
    )
    p.add_argument(
        "--min-repeats", type=int, default=None, help="min timed rounds (default 5; --quick 3)"
    )
    p.add_argument(
        "--no-ref-cache", action="store_true", help="recompute the scipy references (no cache)"
    )
    p.add_argument("--compile", action="store_true", help="also time torchnde with torch.compile")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small subset (< 1 min): float32, tol 1e-6, shorter timing; grid flags still apply",
    )
    a = p.parse_args()
    quick = {"dims": "2,32", "batches": "1,256", "dtypes": "float32", "tols": "1e-6"}
    full = {"dims": "2,32", "batches": "1,256", "dtypes": "float32,float64", "tols": "1e-3,1e-6"}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.target_s is None:
        a.target_s = 0.1 if a.quick else 0.5
    if a.min_repeats is None:
        a.min_repeats = 3 if a.quick else 5
    return a


def main() -> None:
    args = parse_args()
    set_threads(args.threads)
    import torch

    libs = parse_list(args.libs)
    for lib in libs:
        if lib not in LIB_METHODS:
            raise SystemExit(f"unknown lib {lib!r}; known: {sorted(LIB_METHODS)}")
    methods = parse_list(args.methods)
    compile_note = None
    compile_kw = None
    if args.compile:
        import torch._dynamo

        # every configuration/method is a new specialisation of the same code objects
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 1024)
        compile_kw = torchnde_compile_support()
        vf_note = (
            f"row '{COMPILED_VF}': eager torchnde loop with the vector-field module "
            "torch.compile'd (its overhead uses the compiled t_vf)"
        )
        if compile_kw:
            compile_note = (
                f"row '{COMPILED_STEP}': torchnde.solve({compile_kw}=True) with the eager MLP "
                "inside (traced into the compiled step; overhead uses the eager t_vf, NFE from "
                "the solution stats); " + vf_note
            )
        else:
            compile_note = "torchnde.solve has no compile option: only " + vf_note
        print(f"--compile: {compile_note}")

    meta = machine_info()
    meta.update(
        gain=args.gain,
        n_save=args.n_save,
        threads=args.threads,
        compile=compile_note,
        timing=(
            "round-robin over libs per configuration after one untimed warm-up/stats call; "
            f"median of >= {args.min_repeats} rounds and >= "
            f"{args.target_s}s per lib; perf_counter; torch.no_grad()"
        ),
        reference="scipy DOP853 float64 rtol=atol=1e-12 on the whole batch",
    )
    t_np = np.linspace(0.0, 1.0, args.n_save)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    for d in parse_list(args.dims, int):
        h = hidden_for(d)
        weights = make_mlp_weights(d, h, seed=0, gain=args.gain)
        for b in parse_list(args.batches, int):
            y0_np = np.random.default_rng(1).standard_normal((b, d)).astype(np.float32)
            t_ref = time.perf_counter()
            ref = scipy_reference(weights, y0_np, t_np, cache=not args.no_ref_cache)
            ref_s = time.perf_counter() - t_ref
            for dtype in parse_list(args.dtypes):
                tdt = getattr(torch, dtype)
                mlp = torch_mlp(weights, tdt)
                y0 = torch.from_numpy(y0_np).to(tdt)
                t = torch.from_numpy(t_np).to(tdt)
                fields = {"eager": make_counting(mlp)}
                if args.compile:
                    fields["compiled"] = make_counting(torch.compile(mlp))
                for tol in parse_list(args.tols, float):
                    cell = dict(d=d, hidden=h, B=b, dtype=dtype, tol=tol, gain=args.gain)
                    cell_rows = run_cell(cell, libs, methods, fields, y0, t, ref, compile_kw, args)
                    for r in cell_rows:
                        r["ref_s"] = ref_s
                    rows.extend(cell_rows)
                    el = time.perf_counter() - t_start
                    brief = "  ".join(
                        f"{r['lib']}/{r['method']}="
                        + (f"{r['time_s'] * 1e3:.1f}ms" if "time_s" in r else "ERR")
                        for r in cell_rows
                    )
                    print(f"[{el:6.1f}s] d={d} B={b} {dtype} tol={tol:g}: {brief}", flush=True)

    total = time.perf_counter() - t_start
    meta["loadavg_at_end"] = os.getloadavg()
    summary = report(rows, args, compile_note)
    out = write_json(
        "ode_solve", {"meta": meta, "total_s": total, "rows": rows, "summary": summary}, args.out
    )
    print(f"\ntotal {total:.1f}s; wrote {os.path.relpath(out)}")


def run_cell(cell, libs, methods, fields, y0, t, ref, compile_kw, args) -> list[dict]:
    """Prepare, warm up (and collect stats for), then time all (lib, method) of one config."""
    import torch

    if args.compile:
        import torch._dynamo

        torch._dynamo.reset()  # each configuration compiles afresh (first call, untimed)
    preps = {
        "torchnde": lambda f, m: prep_torchnde(f, y0, t, m, cell["tol"]),
        "torchdiffeq": lambda f, m: prep_torchdiffeq(f, y0, t, m, cell["tol"]),
        "torchode": lambda f, m: prep_torchode(f, y0, t, m, cell["tol"]),
    }
    plan = []  # (lib, method, field key)
    for m in methods:
        for lib in libs:
            if m in LIB_METHODS[lib]:
                plan.append((lib, m, "eager"))
        if "compiled" in fields and REF_LIB in libs and m in LIB_METHODS[REF_LIB]:
            if compile_kw:
                plan.append((COMPILED_STEP, m, "eager"))
            plan.append((COMPILED_VF, m, "compiled"))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    runners: dict[tuple[str, str], Runner] = {}
    for lib, m, fk in plan:
        f = fields[fk]
        row = dict(lib=lib, method=m, **cell, field=fk)
        rows[(lib, m)] = row
        try:
            if lib == COMPILED_STEP:
                run = prep_torchnde(f.inner, y0, t, m, cell["tol"], compile_kw)
            elif lib == COMPILED_VF:
                run = prep_torchnde(f, y0, t, m, cell["tol"])
            else:
                run = preps[lib](f, m)
            with torch.no_grad():
                f.reset()
                t1 = time.perf_counter()
                ys, st = run()  # untimed: warm-up (and compilation) and stats
                row["first_call_s"] = time.perf_counter() - t1
                row["nfe"] = f.nfe
            row.update(st)
            if lib == COMPILED_STEP:
                row["nfe"] = st["lib_nfe"]
            row["err"] = float(np.abs(ys.double().numpy() - ref).max())
            runners[(lib, m)] = run
        except Exception as e:  # record and keep going
            row["error"] = f"{type(e).__name__}: {e}"[:300]
    if runners:
        fns: dict[str, Callable[[], Any]] = {f"{k[0]}/{k[1]}": fn for k, fn in runners.items()}
        blocks = {}
        for fk, f in fields.items():
            firsts = [rows[k]["first_call_s"] for k in runners]
            block_s = min(0.5, max(0.005, statistics.median(firsts)))
            blocks[fk] = vf_block(f, t, y0, block_s)
            fns[f"vf/{fk}"] = blocks[fk][0]
        with torch.no_grad():
            tm = time_interleaved(
                fns,
                min_rounds=args.min_repeats,
                slow_min_rounds=3 if args.quick else args.min_repeats,
                target_s=args.target_s,
                untargeted=[f"vf/{fk}" for fk in fields],
            )
        tvf = {fk: tm[f"vf/{fk}"]["median"] / blocks[fk][1] for fk in fields}
        tvf_cpu = {fk: tm[f"vf/{fk}"]["cpu_median"] / blocks[fk][1] for fk in fields}
        for (lib, m), _ in runners.items():
            row = rows[(lib, m)]
            s = tm[f"{lib}/{m}"]
            tv = tvf[row["field"]]
            wall, nfe = s["median"], row["nfe"]
            row.update(time_s=wall, time_q1=s["q1"], time_q3=s["q3"], repeats=s["n"])
            row.update(cpu_s=s["cpu_median"], vf_us=tv * 1e6, vf_cpu_us=tvf_cpu[row["field"]] * 1e6)
            row["overhead"] = wall / (nfe * tv)
            row["outside_vf_s"] = wall - nfe * tv
            if row.get("n_steps"):
                row["outside_vf_per_step_s"] = (wall - nfe * tv) / row["n_steps"]
            row["overhead_cpu"] = s["cpu_median"] / (nfe * tvf_cpu[row["field"]])
    for (_lib, m), row in rows.items():
        base = rows.get((REF_LIB, m))
        if base and "time_s" in base and "time_s" in row:
            row["ratio_vs_torchnde"] = row["time_s"] / base["time_s"]
            row["ratio_vs_torchnde_cpu"] = row["cpu_s"] / base["cpu_s"]
    return list(rows.values())


# ---------------------------------------------------------------------------------- report
def _sel(rows, **kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items()) and "time_s" in r]


def report(rows: list[dict], args, compile_note: str | None) -> dict[str, Any]:
    cols = [
        ("lib", "lib", "s"),
        ("method", "method", "s"),
        ("d", "d", "g"),
        ("B", "B", "g"),
        ("dtype", "dtype", "s"),
        ("tol", "tol", "e"),
        ("time_s", "ms", "ms"),
        ("nfe", "NFE", "g"),
        ("n_steps", "steps", "g"),
        ("n_rejected", "rej", "g"),
        ("err", "max err", "e"),
        ("vf_us", "t_vf µs", "1f"),
        ("overhead", "ovh", "x"),
        ("outside_vf_per_step_s", "out µs/step", "us"),
        ("ratio_vs_torchnde", "t/t_tnde", "x"),
    ]
    print("\n## All rows\n")
    print(markdown_table(rows, cols))
    errs = [r for r in rows if "error" in r]
    for r in errs:
        print(f"ERROR {r['lib']}/{r['method']} d={r['d']} B={r['B']} {r['dtype']} tol={r['tol']}:")
        print(f"  {r['error']}")

    batches = sorted({r["B"] for r in rows})
    libms = []
    for r in rows:
        if (r["lib"], r["method"]) not in libms:
            libms.append((r["lib"], r["method"]))
    summary: dict[str, Any] = {}

    def table(title: str, key: str, kind: str, skey: str, scale: float = 1.0) -> None:
        print(f"\n## {title}\n")
        summary[skey] = {}
        out_rows = []
        for lib, m in libms:
            row = {"lib / method": f"{lib} {m}"}
            for b in batches:
                v = [r[key] * scale for r in _sel(rows, lib=lib, method=m, B=b) if key in r]
                row[f"B={b}"] = med_range(v, kind)
                if v:
                    summary[skey][f"{lib}/{m}/B={b}"] = statistics.median(v)
            out_rows.append(row)
        hdr = [("lib / method", "lib / method", "s")] + [(f"B={b}", f"B={b}", "s") for b in batches]
        print(markdown_table(out_rows, hdr))

    table(
        "Overhead wall / (NFE · t_vf), median [min–max] over d, dtype, tol",
        "overhead",
        "x",
        "overhead",
    )
    table(
        "Overhead on process CPU time (robust to a busy machine), median [min–max]",
        "overhead_cpu",
        "x",
        "overhead_cpu",
    )
    table(
        "Time outside the vector field per attempted step (wall), µs, median [min–max]",
        "outside_vf_per_step_s",
        "1f",
        "outside_us_per_step",
        1e6,
    )

    def ratios(key: str, title: str, skey: str) -> None:
        print(f"\n## {title}\n")
        out_rows = []
        summary[skey] = {}
        for lib, m in libms:
            if lib == REF_LIB:
                continue
            row = {"ratio": f"{lib} / torchnde, {m}"}
            allv = []
            for b in batches:
                v = [r.get(key) for r in _sel(rows, lib=lib, method=m, B=b)]
                v = [x for x in v if x is not None]
                allv += v
                row[f"B={b}"] = med_range(v)
                if v:
                    summary[skey][f"{lib}/{m}/B={b}"] = statistics.median(v)
            row["all"] = med_range(allv)
            if allv:
                summary[skey][f"{lib}/{m}/all"] = statistics.median(allv)
            out_rows.append(row)
        hdr = [("ratio", "ratio", "s")] + [(f"B={b}", f"B={b}", "s") for b in batches]
        print(markdown_table(out_rows, hdr + [("all", "all", "s")]))

    ratios(
        "ratio_vs_torchnde",
        "Speed ratio t_lib / t_torchnde, wall (> 1: torchnde faster), median [min–max]",
        "speed_ratio",
    )
    ratios(
        "ratio_vs_torchnde_cpu",
        "Same ratio on process CPU time (robust to a busy machine), median [min–max]",
        "speed_ratio_cpu",
    )

    # representative cells
    rep = []
    for d, b in ((2, 1), (32, 256)):
        for lib, m in libms:
            for r in _sel(rows, lib=lib, method=m, d=d, B=b, dtype="float32", tol=1e-6):
                rep.append(r)
    if rep:
        print("\n## Representative cells: float32, rtol = atol = 1e-6\n")
        print(
            markdown_table(
                rep,
                [
                    ("lib", "lib", "s"),
                    ("method", "method", "s"),
                    ("d", "d", "g"),
                    ("B", "B", "g"),
                    ("time_s", "ms", "ms"),
                    ("nfe", "NFE", "g"),
                    ("n_steps", "steps", "g"),
                    ("err", "max err", "e"),
                    ("overhead", "ovh", "x"),
                    ("outside_vf_per_step_s", "out µs/step", "us"),
                    ("ratio_vs_torchnde", "t/t_tnde", "x"),
                ],
            )
        )
        summary["representative"] = [
            {
                k: r.get(k)
                for k in (
                    "lib",
                    "method",
                    "d",
                    "B",
                    "time_s",
                    "nfe",
                    "n_steps",
                    "err",
                    "overhead",
                    "outside_vf_per_step_s",
                    "ratio_vs_torchnde",
                )
            }
            for r in rep
        ]
    timed = [r for r in rows if "time_s" in r and "cpu_s" in r]
    if timed:
        share = sum(r["cpu_s"] for r in timed) / sum(r["time_s"] for r in timed)
        summary["cpu_share"] = share
        print(
            f"\nCPU share of the timed solves (process CPU time / wall): {share:.2f}"
            + ("" if share > 0.9 else "  -- below 0.9: the machine was busy, wall times inflated")
        )
    if compile_note:
        print(f"\nNote: {compile_note}.")
    print(
        "\nNotes: NFE is counted by a wrapper module (includes the initial-step evaluations); "
        "steps are attempted steps (torchode: max over the batch, each sample is stepped on "
        "its own). t/t_tnde compares the same method in the same configuration."
    )
    return summary


if __name__ == "__main__":
    main()
