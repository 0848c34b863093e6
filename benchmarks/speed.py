"""speed: the workloads of the "Speed, part 2" issue, each side by side in ONE process.

    .venv/bin/python benchmarks/speed.py                      # ~4 min on 1 thread
    .venv/bin/python benchmarks/speed.py --baseline-rev main  # adds a "today" column

Rows (float32, one thread, fixed seeds):

- ``rk4 solve d=2 B=1`` / ``rk4 solve d=32 B=1024``: fixed-step RK4, 100 steps on [0, 1],
  save times {0, 1}, no gradients; tanh MLP d -> 64|128 -> 64|128 -> d (gain 1), against
  ``torchdiffeq.odeint(method="rk4", options={"step_size": 0.01})``;
- ``rk4 train ...``: the same solve + ``ys.pow(2).mean().backward()`` (backprop both sides);
- ``dopri5 d=2 B=1`` / ``dopri5 d=32 B=256``: adaptive Dopri5, rtol = atol = 1e-6, 10 save
  times, MLP gain 8 (as ``ode_solve.py``), against torchdiffeq dopri5; the ``ovh`` column is
  CPU time / (NFE x one bare call of the MLP), the floor timed in the same rounds;
- ``dopri5 1e-3 ...``: the same at rtol = atol = 1e-3, for the NFE comparison;
- ``dopri5 per-sample ...``: the d=32 problem at B=16 and B=256 with each sample its own step
  (``PIDController(per_sample=True)``), against torchode's Dopri5 with its per-sample
  ``IntegralController`` (torchode's only mode; ``--compile`` adds ``compile_step=True``,
  as it is, with MKL's products (``compile_step mkl``) and with inductor's own ``tanh`` too
  (``compile_step inductor-tanh mkl``: plain inductor));
- ``direct train 1e-03 d=2 B=256``: a training step (solve + ``ys.pow(2).mean().backward()``)
  of the gain-8 MLP, Dopri5 at rtol = atol = 1e-3, 10 save times, torchnde with
  ``DirectAdjoint`` and the steps chosen as constants (``differentiate_steps=False``) on
  torchdiffeq's steps (peer steps), against torchdiffeq's backprop (issue 20's Direct row;
  ``--compile`` adds the compile_step variants);
- ``sde euler`` / ``sde reversible_heun``: ``sdeint`` forward (sde_solve.py's problem: d=32,
  B=256, dt=0.01) against ``torchsde.sdeint`` with ``BrownianInterval(dt=0.01)``.

Every row reports the median wall and process-CPU time over interleaved rounds (one call of
each contender per round, the order reversed every round: ``time_abba``), NFE (counted by
the wrapper module) and the max abs difference of the final state from a float64
torchdiffeq dopri5 solve at rtol 1e-10 (``err``). ``--baseline-rev REV`` imports the
torchnde of a git revision (``git
archive REV src/torchnde``, renamed ``torchnde_base``) into the same process, so "today"
and "now" are timed in the same rounds too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    base_parser,
    machine_info,
    make_counting,
    make_mlp_weights,
    markdown_table,
    set_threads,
    torch_mlp,
    write_json,
)

# isort: split
import torch

# compile_step variants: (label, settings.fast_tanh, settings.onednn_linear); the settings are
# part of the signature, so each variant compiles and keeps its own graphs.
COMPILE_VARIANTS = (
    ("compile_step", True, True),
    ("compile_step mkl", True, False),
    ("compile_step inductor-tanh mkl", False, False),
)


@contextlib.contextmanager
def compile_settings(fast_tanh: bool, onednn_linear: bool) -> Any:
    """``compile_step``'s ``settings.fast_tanh`` / ``settings.onednn_linear`` for the calls
    inside (the default beside inductor's own ``tanh`` and MKL's products)."""
    from torchnde._core.compiled import settings

    old = settings.fast_tanh, settings.onednn_linear
    settings.fast_tanh, settings.onednn_linear = fast_tanh, onednn_linear
    try:
        yield
    finally:
        settings.fast_tanh, settings.onednn_linear = old


def time_abba(fns: dict[str, Any], min_rounds: int, target_s: float) -> dict[str, dict]:
    """Like ``_common.time_interleaved``, but the order of the contenders is reversed every
    round (ABBA), so that no library always runs first after another one (which measurably
    favoured the second of two identical torchnde solves at d=2 B=1, by about 10%)."""
    import time

    import numpy as np

    keys = list(fns)
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(200):
        for k in keys if r % 2 == 0 else reversed(keys):
            c0, t0 = time.process_time(), time.perf_counter()
            fns[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        if r + 1 >= min_rounds and r % 2 == 1 and all(sum(v) >= target_s for v in wall.values()):
            break
    return {
        k: {"median": float(np.median(wall[k])), "cpu_median": float(np.median(cpu[k]))}
        for k in keys
    }


def load_baseline(rev: str) -> Any:
    """The torchnde of git revision ``rev`` as the package ``torchnde_base``."""
    root = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    ).stdout.strip()  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="torchnde_base_")
    tar = subprocess.run(
        ["git", "archive", rev, "src/torchnde"], capture_output=True, check=True, cwd=root
    ).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
    os.rename(os.path.join(tmp, "src", "torchnde"), os.path.join(tmp, "torchnde_base"))
    sys.path.insert(0, tmp)
    import torchnde_base

    return torchnde_base


def main() -> None:
    p = base_parser("speed part 2 rows", "torchnde,torchdiffeq")
    p.add_argument("--baseline-rev", default=None, help="git revision timed as 'today'")
    p.add_argument("--rows", default="all", help="comma-separated row prefixes, or all")
    p.add_argument("--target-s", type=float, default=0.6)
    p.add_argument("--min-rounds", type=int, default=7)
    p.add_argument(
        "--compile", action="store_true", help="add compile_step=True rows (rk4, per-sample)"
    )
    a = p.parse_args()
    set_threads(a.threads)
    import torchdiffeq

    import torchnde as tn

    libs: dict[str, Any] = {"now": tn}
    if a.baseline_rev:
        libs["today"] = load_baseline(a.baseline_rev)
    rows: list[dict[str, Any]] = []

    def want(name: str) -> bool:
        return a.rows == "all" or any(name.startswith(r) for r in a.rows.split(","))

    def reference(net64: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = lambda s, y: net64(y)
            return torchdiffeq.odeint(f, y0.double(), t.double(), rtol=1e-10, atol=1e-10)[-1]

    def record(name: str, fns: dict, nfe: dict, outs: dict, ref: torch.Tensor, floor=None,
               peer: str = "torchdiffeq"):  # fmt: skip
        res = time_abba(fns, min_rounds=a.min_rounds, target_s=a.target_s)
        base = res[peer]
        for k in fns:
            if k == "floor":
                continue
            r = res[k]
            row = {
                "row": name, "lib": k, "ms": r["median"], "cpu_ms": r["cpu_median"],
                "ratio": r["median"] / base["median"],
                "ratio_cpu": r["cpu_median"] / base["cpu_median"], "nfe": nfe[k],
                "err": float((outs[k].double() - ref).abs().max()),
            }  # fmt: skip
            if floor is not None:
                row["ovh"] = r["cpu_median"] / (nfe[k] * res["floor"]["cpu_median"] / floor)
            rows.append(row)
            print(
                f"{name:28s} {k:12s} {r['median'] * 1e3:9.2f} ms  cpu {r['cpu_median'] * 1e3:9.2f}"
                f"  /{peer} {row['ratio']:.3f} (cpu {row['ratio_cpu']:.3f})  nfe {nfe[k]}"
                + (f"  ovh {row['ovh']:.2f}" if "ovh" in row else "")
                + f"  err {row['err']:.1e}",
                flush=True,
            )

    def record_adaptive(name: str, fns: dict, f: Any, net: Any, y0: torch.Tensor,
                        ref: torch.Tensor, peer: str = "torchdiffeq") -> None:  # fmt: skip
        """An adaptive row: each contender's NFE (counted by ``f``) and output from one
        untimed call (a compile_step row's compiling call), then timed beside ``floor``,
        20 bare calls of the field (the ``ovh`` column's unit)."""
        nfe, outs = {}, {}
        for k, fn in fns.items():
            f.reset()
            outs[k] = fn()
            nfe[k] = f.nfe
        calls = 20

        def floor() -> None:
            with torch.no_grad():
                for _ in range(calls):
                    net(y0)

        fns["floor"] = floor
        record(name, fns, nfe, outs, ref, floor=calls, peer=peer)

    # --- fixed-step RK4
    def rk4_row(d: int, B: int, train: bool) -> None:
        name = f"rk4 {'train' if train else 'solve'} d={d} B={B}"
        if not want(name):
            return
        torch.manual_seed(0)
        net = torch_mlp(make_mlp_weights(d, 64 if d == 2 else 128, gain=1.0))
        f = make_counting(net)
        y0 = torch.randn(B, d)
        t = torch.tensor([0.0, 1.0])
        ref = reference(torch_mlp(make_mlp_weights(d, 64 if d == 2 else 128)).double(), y0, t)
        fns: dict[str, Any] = {}
        for label, lib in libs.items():
            term = lib.ODETerm(lambda s, y, args: f(s, y))
            solver, ctrl, sa = lib.RK4(), lib.ConstantStepSize(), lib.SaveAt(ts=t)

            def run(lib=lib, term=term, solver=solver, ctrl=ctrl, sa=sa) -> Any:
                with torch.set_grad_enabled(train):
                    ys = lib.solve(term, solver, 0.0, 1.0, y0, dt0=0.01, controller=ctrl,
                                   saveat=sa).ys  # fmt: skip
                    if train:
                        ys.pow(2).mean().backward()
                return ys[-1].detach()

            fns[f"torchnde {label}"] = run
        stats: dict = {}
        if a.compile:
            # An uncounted field: dynamo would guard on the counter and recompile each call.
            cterm = tn.ODETerm(lambda s, y, args: net(y))
            import time

            from torchnde._core.compiled import clear_cache

            clear_cache()  # this row's signatures only, in the report below
            for label, *flags in COMPILE_VARIANTS:

                def run_c(flags=flags) -> Any:
                    with torch.set_grad_enabled(train), compile_settings(*flags):
                        sol = tn.solve(cterm, tn.RK4(), 0.0, 1.0, y0, dt0=0.01,
                                       saveat=tn.SaveAt(ts=t), controller=tn.ConstantStepSize(),
                                       compile_step=True)  # fmt: skip
                        if train:
                            sol.ys.pow(2).mean().backward()
                    stats.update(sol.stats)
                    return sol.ys[-1].detach()

                start = time.perf_counter()
                run_c()
                print(f"{name}: {label} first call {time.perf_counter() - start:.1f} s")
                fns[f"torchnde {label}"] = run_c

        def run_tdq() -> Any:
            with torch.set_grad_enabled(train):
                ys = torchdiffeq.odeint(f, y0, t, method="rk4", options={"step_size": 0.01})
                if train:
                    ys.pow(2).mean().backward()
            return ys[-1].detach()

        fns["torchdiffeq"] = run_tdq
        nfe, outs = {}, {}
        for k, fn in fns.items():
            f.reset()
            outs[k] = fn()
            nfe[k] = stats["num_fevals"] if "compile_step" in k else f.nfe
        record(name, fns, nfe, outs, ref)
        if a.compile:
            from torchnde._core.compiled import cache_info

            for e in cache_info():
                if e["key"] is not None and e["key"][0] == "block":
                    print(f"{name}: blocks (tanh, onednn {e['key'][1][-1]}) {e['decision']}, "
                          f"{e['num_compilations']} graph(s), eager {e['eager_s']}, "
                          f"compiled {e['compiled_s']}")  # fmt: skip

    for d, B in ((2, 1), (32, 1024)):
        for train in (False, True):
            rk4_row(d, B, train)

    # --- adaptive Dopri5
    def dopri5_row(tol: float, d: int, B: int) -> None:
        name = f"dopri5 {tol:g} d={d} B={B}"
        if not want(name):
            return
        torch.manual_seed(0)
        w = make_mlp_weights(d, 64 if d == 2 else 128, gain=8.0)
        net = torch_mlp(w)
        f = make_counting(net)
        y0 = torch.randn(B, d)
        t = torch.linspace(0, 1, 10)
        ref = reference(torch_mlp(w).double(), y0, t)
        fns: dict[str, Any] = {}
        # "peer-steps": torchnde with the embedded error estimate torchdiffeq's and diffrax's
        # dopri5 use (Shampine's, 2/3 of the default's) and their rule that a step never
        # shrinks after an accepted one: their steps, the like-for-like row.
        variants = [(label, lib, lib.Dopri5(), None) for label, lib in libs.items()]
        variants.append(("peer-steps", tn, tn.Dopri5(error_estimate="shampine"), (0.2, 1.0)))
        for label, lib, solver, hold in variants:
            term = lib.ODETerm(lambda s, y, args: f(s, y))
            ctrl = lib.PIDController(rtol=tol, atol=tol, hold=hold)
            sa = lib.SaveAt(ts=t)

            def run(lib=lib, term=term, solver=solver, ctrl=ctrl, sa=sa) -> Any:
                with torch.no_grad():
                    return lib.solve(term, solver, 0.0, 1.0, y0, controller=ctrl,
                                     saveat=sa).ys[-1]  # fmt: skip

            fns[f"torchnde {label}"] = run

        def run_tdq() -> Any:
            with torch.no_grad():
                return torchdiffeq.odeint(f, y0, t, rtol=tol, atol=tol, method="dopri5")[-1]

        fns["torchdiffeq"] = run_tdq
        record_adaptive(name, fns, f, net, y0, ref)

    for tol in (1e-6, 1e-3):
        for d, B in ((2, 1), (32, 256)):
            dopri5_row(tol, d, B)

    # --- a Direct training step, the steps chosen as constants (issue 20's Direct row)
    def direct_train_row(d: int, B: int) -> None:
        name = f"direct train 1e-03 d={d} B={B}"
        if not want(name):
            return
        torch.manual_seed(0)
        w = make_mlp_weights(d, 64 if d == 2 else 128, gain=8.0)
        # torchnde's fields are uncounted (compile_step would guard on a counter): NFE from
        # the solve's stats; each contender trains its own copy of the MLP.
        y0 = torch.randn(B, d)
        t = torch.linspace(0, 1, 10)
        ref = reference(torch_mlp(w).double(), y0, t)
        nets = {}

        def tn_run(label: str, compiled: bool, flags=(True, True)) -> Any:
            # torchdiffeq's steps (peer steps) and its backprop convention (steps constants).
            model = nets.setdefault(label, torch_mlp(w))
            term = tn.ODETerm(lambda s, y, args: model(y))
            ctrl = tn.PIDController(rtol=1e-3, atol=1e-3, hold=(0.2, 1.0),
                                    differentiate_steps=False)  # fmt: skip
            solver = tn.Dopri5(error_estimate="shampine")
            with compile_settings(*flags):
                sol = tn.solve(term, solver, 0.0, 1.0, y0, controller=ctrl,
                               saveat=tn.SaveAt(ts=t), compile_step=compiled)  # fmt: skip
            for q in model.parameters():
                q.grad = None
            sol.ys.pow(2).mean().backward()
            stats[label] = int(sol.stats["num_fevals"])
            return sol.ys[-1].detach()

        def tdq_run() -> Any:  # through the counting wrapper (its own copy of the MLP)
            ys = torchdiffeq.odeint(f, y0, t, rtol=1e-3, atol=1e-3, method="dopri5")
            for q in f.parameters():
                q.grad = None
            ys.pow(2).mean().backward()
            return ys[-1].detach()

        f = make_counting(torch_mlp(w))
        stats: dict[str, int] = {}
        fns: dict[str, Any] = {"torchnde peer-steps": lambda: tn_run("torchnde peer-steps", False)}
        if a.compile:
            for label, *flags in COMPILE_VARIANTS:
                fns[f"torchnde {label}"] = lambda label=label, flags=flags: tn_run(
                    f"torchnde {label}", True, tuple(flags)
                )
        fns["torchdiffeq"] = tdq_run
        nfe, outs = {}, {}
        for k, fn in fns.items():
            f.reset()
            outs[k] = fn()
            for _ in range(12 if "compile_step" in k else 0):  # finish the probe
                fn()
            nfe[k] = f.nfe if k == "torchdiffeq" else stats[k]
        record(name, fns, nfe, outs, ref)

    direct_train_row(2, 256)

    # --- adaptive Dopri5, each sample its own step (torchode's mode)
    def per_sample_row(B: int) -> None:
        name = f"dopri5 per-sample 1e-06 d=32 B={B}"
        if not want(name):
            return
        import torchode as to

        torch.manual_seed(0)
        w = make_mlp_weights(32, 128, gain=8.0)
        net = torch_mlp(w)
        f = make_counting(net)
        y0 = torch.randn(B, 32)
        t = torch.linspace(0, 1, 10)
        ref = reference(torch_mlp(w).double(), y0, t)
        ts = t.expand(B, -1)
        fns: dict[str, Any] = {}
        variants = [(label, lib, lib.Dopri5(), None, False) for label, lib in libs.items()]
        variants.append(("peer-steps", tn, tn.Dopri5(error_estimate="shampine"), (0.2, 1.0), False))
        if a.compile:
            variants += [(label, tn, tn.Dopri5(), None, True) for label, *_ in COMPILE_VARIANTS]
        flags_of = {label: flags for label, *flags in COMPILE_VARIANTS}
        for label, lib, solver, hold, compiled in variants:
            flags = flags_of.get(label, (True, True))
            # (compile_step: an uncounted field, as the rk4 rows; NFE from the solve's stats)
            term = lib.ODETerm(
                (lambda s, y, args: net(y)) if compiled else (lambda s, y, args: f(s, y))
            )
            ctrl = lib.PIDController(rtol=1e-6, atol=1e-6, hold=hold, per_sample=True)

            def run(lib=lib, term=term, solver=solver, ctrl=ctrl, compiled=compiled,
                    flags=flags) -> Any:  # fmt: skip
                with torch.no_grad(), compile_settings(*flags):
                    sol = lib.solve(term, solver, 0.0, 1.0, y0, controller=ctrl,
                                    saveat=lib.SaveAt(ts=ts), compile_step=compiled)  # fmt: skip
                if compiled:
                    f.nfe = int(sol.stats["num_fevals"])
                return sol.ys[-1]

            fns[f"torchnde {label}"] = run
        oterm = to.ODETerm(lambda s, y: f(s, y))
        osolver = to.AutoDiffAdjoint(
            to.Dopri5(term=oterm), to.IntegralController(atol=1e-6, rtol=1e-6, term=oterm)
        )
        problem = to.InitialValueProblem(y0=y0, t_eval=ts)

        def run_to() -> Any:
            with torch.no_grad():
                return osolver.solve(problem).ys[:, -1]

        fns["torchode"] = run_to
        record_adaptive(name, fns, f, net, y0, ref, peer="torchode")

    for B in (16, 256):
        per_sample_row(B)

    # --- SDE forward, diagonal noise (sde_solve.py's problem: d=32, B=256, dt=0.01)
    def sde_row(method: str, sde_method: str, calculus: str) -> None:
        name = f"sde {method} fwd d=32 B=256"
        if not want(name):
            return
        import torchsde

        from sde_solve import BATCH, DT, SDE

        sde = SDE("ito" if calculus == "ito" else "stratonovich")
        y0 = torch.randn(BATCH, 32)
        ts = torch.tensor([0.0, 1.0])
        fns: dict[str, Any] = {}
        for label, lib in libs.items():

            def run(lib=lib) -> Any:
                with torch.no_grad():
                    return lib.sdeint(sde.f, sde.g, y0, ts, noise="diagonal", calculus=calculus,
                                      method=method, dt=DT)[-1]  # fmt: skip

            fns[f"torchnde {label}"] = run

        def run_sde() -> Any:
            bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(BATCH, 32), dt=DT)
            with torch.no_grad():
                return torchsde.sdeint(sde, y0, ts, method=sde_method, dt=DT, bm=bm)[-1]

        fns["torchsde+dt hint"] = run_sde
        res = time_abba(fns, min_rounds=a.min_rounds, target_s=a.target_s)
        base = res["torchsde+dt hint"]
        for k, r in res.items():
            row = {"row": name, "lib": k, "ms": r["median"], "cpu_ms": r["cpu_median"],
                   "ratio": r["median"] / base["median"],
                   "ratio_cpu": r["cpu_median"] / base["cpu_median"], "nfe": 200}  # fmt: skip
            rows.append(row)
            cpu = r["cpu_median"] * 1e3
            print(
                f"{name:28s} {k:16s} {r['median'] * 1e3:9.2f} ms  cpu {cpu:9.2f}  "
                f"/torchsde {row['ratio_cpu']:.3f}",
                flush=True,
            )

    sde_row("euler", "euler", "ito")
    sde_row("reversible_heun", "reversible_heun", "stratonovich")

    cols = [
        ("row", "row", "s"), ("lib", "lib", "s"), ("ms", "ms", "ms"), ("cpu_ms", "cpu ms", "ms"),
        ("ratio", "/peer", "x"), ("ratio_cpu", "/peer cpu", "x"), ("nfe", "NFE", "g"),
        ("ovh", "ovh", "x"), ("err", "err", "e"),
    ]  # fmt: skip
    print()
    print(markdown_table(rows, cols))
    path = write_json("speed", {"machine": machine_info(), "rows": rows}, a.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
