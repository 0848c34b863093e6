"""diffrax_compare: torchnde against diffrax (JAX, jit) and the PyTorch peers, in ONE process.

    PYTHONPATH=src .venv/bin/python benchmarks/diffrax_compare.py           # a few minutes
    PYTHONPATH=src .venv/bin/python benchmarks/diffrax_compare.py --quick   # smoke, < 1 min

Workloads (float32, one thread, fixed seeds, ``speed.py``'s fields): the tanh MLP
d -> 64|128 -> 64|128 -> d with gain 8 (``make_mlp_weights``; the same float32 weights in
torch and in JAX), y' = MLP(y) on [0, 1], 10 save times ``linspace(0, 1, 10)``, rtol = atol =
1e-6, initial step chosen by each library:

- ``d=2 B=1`` with Tsit5 and Dopri5;
- ``d=32 B=256`` with Dopri5 and Tsit5 (one step size for the whole batch everywhere but in
  torchode, which steps every sample on its own).

Contenders: ``diffrax`` (``diffeqsolve`` with ``Tsit5`` / ``Dopri5``, ``PIDController(rtol,
atol)``, ``SaveAt(ts)``, the whole solve under ``jax.jit``, ``block_until_ready``),
``torchnde`` eager, ``torchnde_peersteps`` (eager, Dopri5 rows:
``Dopri5(error_estimate="shampine")``, the embedded error estimate diffrax's and torchdiffeq's
``dopri5`` use, 2/3 of torchnde's default one, with ``PIDController(hold=(0.2, 1.0))``, their
rule that a step never shrinks after an accepted one: their steps, so equal NFE),
``torchnde compile_step``, ``torchnde_compiled_mkl`` (the same with MKL's products instead
of oneDNN's for the large linear layers, ``settings.onednn_linear = False``) and
``torchnde_compiled_plain`` (plain inductor: its own ``tanh`` too, ``settings.fast_tanh =
False``)
(``solve(..., compile_step=True)``: the
attempted step compiled with ``torch.compile`` and kept only where it measures faster,
``_core/compiled.py``; the choice it made is printed), ``torchdiffeq.odeint`` (Dopri5 only:
torchdiffeq has no Tsit5) and ``torchode`` (``IntegralController``, ``AutoDiffAdjoint``).
All torch solves run under ``torch.no_grad()``.

Threads: ``torch.set_num_threads(1)``, and, set in this file *before* jax is imported,
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"``,
``JAX_PLATFORMS=cpu`` and the ``OMP/OPENBLAS/MKL_NUM_THREADS=1`` of ``_common`` (an
``XLA_FLAGS`` already in the environment is kept and these are appended). Process CPU time
counts every thread of the process anyway, so a library that still spreads work over threads
shows it as CPU > wall.

Measurements: every contender is called once per round, the order reversed every round
(ABBA, ``speed.time_abba``), median wall and process-CPU time per solve over the rounds. Per
row also:

- NFE and accepted / rejected steps: diffrax from ``sol.stats``, its NFE counted by a
  ``jax.debug.callback`` in a separately compiled copy of the solve (never the timed one);
  torchnde from ``sol.stats``; torchdiffeq and torchode through the counting wrapper of
  ``_common.make_counting`` in an extra untimed call. The timed torch solves call the bare
  ``net``: dynamo guards on the wrapper's Python-int counter, so under ``compile_step`` it
  recompiled at every attempt (and the probe then chose eager);
- ``err``: max abs error over all save times against scipy DOP853 in float64 at rtol = atol =
  1e-12 (``_common.scipy_reference``);
- ``first s``: the first call's wall time (diffrax: trace + XLA compile; ``compile_step``:
  dynamo/inductor compile and the start of the eager/compiled probe); inductor's on-disk cache
  may hold the compiled step from an earlier run, ``--cold`` disables it;
- ``ovh`` = CPU per solve / (NFE x one bare vector-field call in that framework), the bare
  call timed in the same ABBA rounds: in torch ``net(y)`` eager, in JAX one iteration of a
  jitted ``fori_loop`` of ``y + 1e-3 * mlp(y)`` (the in-graph cost of the field, which is what
  the jitted solve pays; one extra axpy per call);
- ``/dfx``: the contender's time over diffrax's in the same rounds (CPU and wall).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any

# Before anything imports jax (XLA reads these at backend initialisation).
_XLA_1T = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
if "--threads" not in " ".join(sys.argv) or "--threads=1" in sys.argv:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _XLA_1T).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--cold" in sys.argv:  # before torch is imported: inductor's on-disk caches off
    os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    base_parser,
    machine_info,
    make_counting,
    make_mlp_weights,
    markdown_table,
    numpy_mlp,
    scipy_reference,
    set_threads,
    torch_mlp,
    write_json,
)

# isort: split
import numpy as np  # noqa: E402
import torch  # noqa: E402

from speed import time_abba  # noqa: E402

# (d, B, method) in the order the issue lists them
WORKLOADS = [(2, 1, "Tsit5"), (2, 1, "Dopri5"), (32, 256, "Dopri5"), (32, 256, "Tsit5")]
GOALS = {(2, 1, "Tsit5"): 3.0, (32, 256, "Dopri5"): 1.2}  # torchnde compiled / diffrax, CPU
TOL = 1e-6


def jax_mlp(weights: list[np.ndarray]) -> Any:
    """The MLP of ``_common.torch_mlp`` in jax.numpy: ``y: (B, d) -> (B, d)``."""
    import jax.numpy as jnp

    return numpy_mlp(weights, xp=jnp)


def diffrax_fns(weights: list[np.ndarray], y0: np.ndarray, ts: np.ndarray, method: str) -> dict:
    """The jitted diffrax solve, a counting copy of it (untimed), and the in-graph field floor."""
    import diffrax
    import jax
    import jax.numpy as jnp

    mlp = jax_mlp(weights)
    jy0, jts = jnp.asarray(y0), jnp.asarray(ts)
    solver = getattr(diffrax, method)()
    ctrl = diffrax.PIDController(rtol=TOL, atol=TOL)
    count = [0]

    def bump() -> None:
        count[0] += 1

    def make(counting: bool) -> Any:
        def vf(t: Any, y: Any, args: Any) -> Any:
            if counting:
                jax.debug.callback(bump)
            return mlp(y)

        @jax.jit
        def solve(y: Any) -> Any:
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(vf), solver, t0=0.0, t1=float(ts[-1]), dt0=None, y0=y,
                saveat=diffrax.SaveAt(ts=jts), stepsize_controller=ctrl, max_steps=100_000,
            )  # fmt: skip
            return sol.ys, sol.stats

        return solve

    solve, counted = make(False), make(True)

    def run() -> Any:
        ys, _ = solve(jy0)
        return ys.block_until_ready()

    def nfe() -> tuple[int, int, int]:
        count[0] = 0
        _, st = counted(jy0)
        jax.effects_barrier()
        return count[0], int(st["num_accepted_steps"]), int(st["num_rejected_steps"])

    def stats() -> Any:
        return solve(jy0)[1]

    return {"run": run, "nfe": nfe, "stats": stats, "mlp": mlp, "y0": jy0}


def jax_floor(mlp: Any, y0: Any, calls: int) -> Any:
    import jax

    @jax.jit
    def loop(y: Any) -> Any:
        return jax.lax.fori_loop(0, calls, lambda i, c: c + 1e-3 * mlp(c), y)

    loop(y0).block_until_ready()
    return lambda: loop(y0).block_until_ready()


# compile_step variants beside the default: (settings.fast_tanh, settings.onednn_linear)
_VARIANTS = {"torchnde_compiled_mkl": (True, False), "torchnde_compiled_plain": (False, False)}


def _flags_of(key: Any) -> Any:
    """A compile_step signature's ``(settings.fast_tanh, settings.onednn_linear)`` (its last
    item; host-control steps and fixed-step blocks wrap it as ``(kind, signature)``)."""
    if not key:
        return None
    return key[1][-1] if key[0] in ("host", "block") else key[-1]


def _with_settings(flags: tuple, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from speed import compile_settings

    with compile_settings(*flags):
        return fn(*args, **kwargs)


def workload(d: int, B: int, method: str, libs: set[str], a: Any, rows: list, notes: list) -> None:
    """Time one (d, B, method) row for every contender; append to ``rows`` and ``notes``."""
    import torchnde as tn
    from torchnde._core import compiled as tn_compiled

    name = f"{method.lower()} d={d} B={B}"
    torch.manual_seed(0)
    w = make_mlp_weights(d, 64 if d == 2 else 128, gain=8.0)
    net = torch_mlp(w)
    for q in net.parameters():
        q.requires_grad_(False)
    f = make_counting(net)
    y0 = torch.randn(B, d)
    ts = torch.linspace(0, 1, 10)
    ref = scipy_reference(w, y0.numpy().astype(np.float64), ts.numpy().astype(np.float64))
    fns: dict[str, Any] = {}
    floors: dict[str, Any] = {}
    stats: dict[str, tuple[int, int, int]] = {}
    first: dict[str, float] = {}
    outs: dict[str, np.ndarray] = {}
    calls = 20

    if "diffrax" in libs:
        dfx = diffrax_fns(w, y0.numpy(), ts.numpy(), method)
        t0 = time.perf_counter()
        outs["diffrax"] = np.asarray(dfx["run"]())
        first["diffrax"] = time.perf_counter() - t0
        stats["diffrax"] = dfx["nfe"]()
        fns["diffrax"] = dfx["run"]
        floors["jax"] = jax_floor(dfx["mlp"], dfx["y0"], calls)

    # Timed solves call the bare ``net``; NFE comes from an untimed call through the counting
    # wrapper (torchnde: ``sol.stats["num_fevals"]``). The wrapper's ``self.nfe += 1`` is
    # a Python int that dynamo guards on, so under compile_step it recompiled every attempt.
    term = tn.ODETerm(lambda t, y, args: net(y))
    solver = getattr(tn, method)()
    ctrl, sa = tn.PIDController(rtol=TOL, atol=TOL), tn.SaveAt(ts=ts)

    def tn_run(compile_step: bool, solver=solver, ctrl=ctrl, sa=sa, term=term) -> Any:
        with torch.no_grad():
            sol = tn.solve(term, solver, 0.0, 1.0, y0, controller=ctrl, saveat=sa,
                           compile_step=compile_step)  # fmt: skip
        return sol

    def tn_stats(sol: Any) -> tuple[int, int, int]:
        s = sol.stats
        return (int(s["num_fevals"]), int(torch.as_tensor(s["num_accepted_steps"]).max()),
                int(torch.as_tensor(s["num_rejected_steps"]).max()))  # fmt: skip

    contenders = (("torchnde", False), ("torchnde_compiled", True), ("torchnde_compiled_mkl", True),
                  ("torchnde_compiled_plain", True), ("torchnde_peersteps", False))  # fmt: skip
    cleared = False
    for key, cs in contenders:
        if key not in libs or (key == "torchnde_peersteps" and method != "Dopri5"):
            continue
        run = tn_run
        if key in _VARIANTS:  # `settings.fast_tanh`, `settings.onednn_linear`
            run = functools.partial(_with_settings, _VARIANTS[key], tn_run)
        if key == "torchnde_peersteps":  # the peers' error estimate and step rule: their steps
            peer_ctrl = tn.PIDController(rtol=TOL, atol=TOL, hold=(0.2, 1.0))
            peer_solver = tn.Dopri5(error_estimate="shampine")
            run = functools.partial(tn_run, solver=peer_solver, ctrl=peer_ctrl)
        if cs and not cleared:  # (once: each variant has a signature of its own)
            tn_compiled.clear_cache()
            torch._dynamo.reset()
            cleared = True
        t0 = time.perf_counter()
        sol = run(cs)
        first[key] = time.perf_counter() - t0
        outs[key] = sol.ys.numpy()
        stats[key] = tn_stats(sol)
        fns[key] = lambda cs=cs, run=run: run(cs).ys
        if cs:
            for _ in range(12):  # finish the eager/compiled probe before timing
                run(True)
            info = tn_compiled.cache_info()
            dec = [
                f"{e['decision']} (tanh, onednn {_flags_of(e['key'])}, "
                f"compiles {e['num_compilations']}, probe eager "
                f"{(e['eager_s'] or 0) * 1e6:.0f} us / compiled "
                f"{(e['compiled_s'] or 0) * 1e6:.0f} us per attempt)"
                for e in info
            ]
            notes.append(f"{name}: compile_step chose " + "; ".join(dec))
            print(notes[-1], flush=True)

    if "torchdiffeq" in libs and method == "Dopri5":
        import torchdiffeq

        def tdq_run(field: Any = lambda t, y: net(y)) -> Any:
            with torch.no_grad():
                return torchdiffeq.odeint(field, y0, ts, rtol=TOL, atol=TOL, method="dopri5")

        t0 = time.perf_counter()
        outs["torchdiffeq"] = tdq_run().numpy()
        first["torchdiffeq"] = time.perf_counter() - t0
        f.reset()
        tdq_run(f)
        stats["torchdiffeq"] = (f.nfe, f.n_accepted, f.n_rejected)
        fns["torchdiffeq"] = tdq_run

    if "torchode" in libs:
        import torchode as to

        ivp = to.InitialValueProblem(y0=y0, t_eval=ts.expand(B, -1))

        def to_solver(field: Any) -> Any:
            oterm = to.ODETerm(field)
            ostep = getattr(to, method)(term=oterm)
            octrl = to.IntegralController(atol=TOL, rtol=TOL, term=oterm)
            return to.AutoDiffAdjoint(ostep, octrl)

        osolver, ocount = to_solver(lambda t, y: net(y)), to_solver(f)

        def to_run(s: Any = osolver) -> Any:
            with torch.no_grad():
                return s.solve(ivp)

        t0 = time.perf_counter()
        osol = to_run()
        first["torchode"] = time.perf_counter() - t0
        outs["torchode"] = osol.ys.transpose(0, 1).numpy()
        f.reset()
        osol = to_run(ocount)
        nst = osol.stats["n_steps"].max().item()
        nacc = osol.stats["n_accepted"].max().item()
        stats["torchode"] = (f.nfe, int(nacc), int(nst - nacc))
        fns["torchode"] = lambda: to_run().ys

    def torch_floor() -> None:
        with torch.no_grad():
            for _ in range(calls):
                net(y0)

    floors["torch"] = torch_floor
    for fn in fns.values():  # warm-up
        fn()
    res = time_abba({**fns, **floors}, min_rounds=a.min_rounds, target_s=a.target_s)
    base = res.get("diffrax")
    for k in fns:
        r = res[k]
        fl = res["jax" if k == "diffrax" else "torch"]["cpu_median"] / calls
        nfe, acc, rej = stats[k]
        row = {
            "row": name, "lib": k, "ms": r["median"], "cpu_ms": r["cpu_median"],
            "nfe": nfe, "acc": acc, "rej": rej,
            "err": float(np.abs(outs[k].astype(np.float64) - ref).max()),
            "field_us": fl * 1e6, "ovh": r["cpu_median"] / (nfe * fl), "first_s": first[k],
        }  # fmt: skip
        if base is not None:
            row["ratio_cpu"] = r["cpu_median"] / base["cpu_median"]
            row["ratio"] = r["median"] / base["median"]
        rows.append(row)
        print(
            f"{name:18s} {k:18s} {r['median'] * 1e3:8.2f} ms cpu {r['cpu_median'] * 1e3:8.2f}"
            + (f" /dfx {row['ratio_cpu']:.2f}" if "ratio_cpu" in row else "")
            + f" nfe {nfe} acc {acc} rej {rej} ovh {row['ovh']:.2f}"
            f" err {row['err']:.1e} first {first[k]:.2f}s",
            flush=True,
        )


def main() -> None:
    p = base_parser(
        "torchnde vs diffrax (jit) and torch peers",
        "diffrax,torchnde,torchnde_compiled,torchnde_compiled_mkl,torchnde_compiled_plain,"
        "torchnde_peersteps,torchdiffeq,torchode",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: d=2 rows, few rounds")
    p.add_argument(
        "--cold", action="store_true",
        help="disable inductor's on-disk caches, so 'first s' is a cold compile_step compile",
    )  # fmt: skip
    p.add_argument("--rows", default="all", help="comma-separated d:B:Method, or all")
    p.add_argument("--target-s", type=float, default=0.8, help="min seconds per contender")
    p.add_argument("--min-rounds", type=int, default=9)
    a = p.parse_args()
    set_threads(a.threads)
    libs = set(a.libs.split(","))
    work = WORKLOADS
    if a.rows != "all":
        want = {tuple(r.split(":")) for r in a.rows.split(",")}
        work = [w for w in work if (str(w[0]), str(w[1]), w[2]) in want]
    if a.quick:
        work = [w for w in work if w[0] == 2]
        a.target_s, a.min_rounds = min(a.target_s, 0.1), min(a.min_rounds, 3)

    import jax

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for d, B, method in work:
        workload(d, B, method, libs, a, rows, notes)

    goals: list[str] = []
    for (d, B, method), g in GOALS.items():
        name = f"{method.lower()} d={d} B={B}"
        got = [r for r in rows if r["row"] == name and r["lib"] == "torchnde_compiled"]
        if got and "ratio_cpu" in got[0]:
            x = got[0]["ratio_cpu"]
            goals.append(f"{name}: torchnde compile_step / diffrax = {x:.2f}x CPU (goal <= {g}x): "
                         + ("met" if x <= g else "NOT met"))  # fmt: skip
    cols = [
        ("row", "row", "s"), ("lib", "lib", "s"), ("ms", "ms", "ms"), ("cpu_ms", "cpu ms", "ms"),
        ("ratio_cpu", "/dfx cpu", "x"), ("ratio", "/dfx wall", "x"), ("nfe", "NFE", "g"),
        ("acc", "acc", "g"), ("rej", "rej", "g"), ("field_us", "field µs", "1f"),
        ("ovh", "ovh", "x"), ("err", "err", "e"), ("first_s", "first s", "x"),
    ]  # fmt: skip
    print()
    print(markdown_table(rows, cols))
    print()
    for line in notes + goals:
        print(line)
    payload = {
        "machine": machine_info(),
        "versions": {"jax": jax.__version__, "diffrax": _version("diffrax"),
                     "torchdiffeq": _version("torchdiffeq"), "torchode": _version("torchode")},
        "xla_flags": os.environ.get("XLA_FLAGS"), "quick": a.quick, "rows": rows,
        "notes": notes, "goals": goals,
    }  # fmt: skip
    path = write_json("diffrax_compare", payload, a.out)
    print(f"\nwrote {path}")


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return None


if __name__ == "__main__":
    main()
