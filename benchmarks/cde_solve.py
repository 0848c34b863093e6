"""Neural CDEs: torchnde against torchcde, side by side in one process.

Problem (torchcde's README setting, scaled up): a batch of 256 series of length 100 with 8
channels (a random walk), a natural cubic spline control, hidden size 32 and a two-layer MLP
vector field (32 -> 64 -> 32*8). Measured, each library on its own path class:

- coefficient computation (natural cubic; also with 10% missing values);
- ``cdeint`` forward with RK4 (one step per knot interval) and with dopri5;
- forward + backward with dopri5: backpropagation through the solver, and the continuous
  adjoint (torchnde ``BacksolveAdjoint``, torchcde ``adjoint=True``).

The floor of a solve is (vector-field evaluations) x (cost of one evaluation: MLP + control
derivative + batched matrix-vector product, measured alone with the library's own path);
``overhead`` = CPU time / floor (process CPU time with one thread: robust to a shared
machine). Run: ``.venv/bin/python benchmarks/cde_solve.py [--quick]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before torch.
import _common as C

# isort: split
import torch

import torchnde as tn

BATCH, LENGTH, CHANNELS, HIDDEN, WIDTH = 256, 100, 8, 32, 64


class Field(torch.nn.Module):
    """The CDE vector field, counting its evaluations."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(HIDDEN, WIDTH)
        self.l2 = torch.nn.Linear(WIDTH, HIDDEN * CHANNELS)
        self.n = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.n += 1
        return torch.tanh(self.l2(torch.relu(self.l1(z)))).view(*z.shape[:-1], HIDDEN, CHANNELS)


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0], "torchnde,torchcde")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--no-nan", action="store_true", help="skip the missing-values rows")
    a = p.parse_args()
    C.set_threads(a.threads)
    import torchcde

    target = 0.3 if a.quick else 1.0
    rounds = 3 if a.quick else 5
    torch.manual_seed(0)
    x = torch.randn(BATCH, LENGTH, CHANNELS).cumsum(1) * 0.1
    t = torch.arange(LENGTH, dtype=torch.float32)
    ends = torch.tensor([0.0, LENGTH - 1.0])
    f = Field()
    z0 = torch.randn(BATCH, HIDDEN)
    rows: list[dict] = []

    # --- coefficients
    def coeff_row(name: str, ours, theirs, xx, slow: bool = False) -> None:
        ours(xx, t), theirs(xx, t)
        torch.testing.assert_close(ours(xx, t), theirs(xx, t), rtol=1e-3, atol=1e-3)
        # Blocks of calls, alternating between the libraries: per-call interleaving lets each
        # library evict the other's working set from the cache.
        fns = {"torchnde": lambda: ours(xx, t), "torchcde": lambda: theirs(xx, t)}
        calls = 1 if slow else 10
        cpu: dict[str, list[float]] = {k: [] for k in fns}
        wall: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(2 if slow else (5 if a.quick else 15)):
            for k, fn in fns.items():
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    fn()
                cpu[k].append((time.process_time() - c0) / calls)
                wall[k].append((time.perf_counter() - w0) / calls)
        res = {
            k: {"median": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in fns
        }
        for lib in ("torchnde", "torchcde"):
            rows.append(
                {"case": name, "lib": lib, "time": res[lib]["median"], "cpu": res[lib]["cpu"]}
            )
        rows[-2]["speedup"] = res["torchcde"]["cpu"] / res["torchnde"]["cpu"]

    coeff_row("natural cubic coeffs", tn.natural_cubic_coeffs, torchcde.natural_cubic_coeffs, x)
    coeff_row(
        "hermite coeffs",
        tn.hermite_cubic_coeffs,
        torchcde.hermite_cubic_coefficients_with_backward_differences,
        x,
    )
    if not a.no_nan:
        # torchcde loops over every series in Python here: a batch of 32 keeps it to seconds.
        xn = x[:32].clone()
        g = torch.Generator().manual_seed(1)
        xn[torch.rand(xn.shape, generator=g) < 0.1] = float("nan")
        xn[:, 0] = x[:32, 0]  # observed starts: both libraries then fill the same way
        coeff_row(
            "natural cubic coeffs, 10% NaN, batch 32",
            tn.natural_cubic_coeffs,
            torchcde.natural_cubic_coeffs,
            xn,
            slow=True,
        )

    coeffs = tn.natural_cubic_coeffs(x, t)
    X = tn.CubicSpline(coeffs, t)
    Xc = torchcde.CubicSpline(coeffs, t)
    tol = dict(rtol=a.rtol, atol=a.atol)

    # --- per-evaluation floor: MLP + control derivative + matrix-vector product
    s = torch.tensor(37.3)

    def one_eval(path) -> None:
        g = f(s, z0)
        (g @ path.derivative(s).unsqueeze(-1)).squeeze(-1)

    def cpu_per_call(fn, calls: int = 50, blocks: int = 7) -> float:
        """Median over blocks of process CPU time per call (robust to a shared machine)."""
        fn()
        out = []
        for _ in range(blocks):
            c0 = time.process_time()
            for _ in range(calls):
                fn()
            out.append((time.process_time() - c0) / calls)
        return statistics.median(out)

    with torch.no_grad():
        per_eval = {
            "torchnde": cpu_per_call(lambda: one_eval(X)),
            "torchcde": cpu_per_call(lambda: one_eval(Xc)),
        }

    # --- forward solves
    def fwd(lib: str, method: str):
        if lib == "torchnde":
            return lambda: tn.cdeint(X, f, z0, ends, solver=method, **tol)
        opts = {"step_size": 1.0} if method == "rk4" else {}
        return lambda: torchcde.cdeint(
            Xc, f, z0, ends, adjoint=False, method=method, options=opts, **tol
        )

    solve_time = {}
    for method in ("rk4", "dopri5"):
        fns = {lib: fwd(lib, method) for lib in ("torchnde", "torchcde")}
        nfe = {}
        with torch.no_grad():
            outs = {}
            for lib, fn in fns.items():
                f.n = 0
                outs[lib] = fn()
                nfe[lib] = f.n
            ref = outs["torchcde"][:, -1]
            err = float((outs["torchnde"][-1] - ref).abs().max() / ref.abs().max())
            res = C.time_interleaved(fns, min_rounds=rounds, target_s=target)
        for lib in fns:
            floor = nfe[lib] * per_eval[lib]
            solve_time[(lib, method)] = res[lib]["cpu_median"]
            rows.append({
                "case": f"cdeint {method}", "lib": lib, "time": res[lib]["median"],
                "cpu": res[lib]["cpu_median"], "nfe": nfe[lib], "floor": floor,
                "overhead": res[lib]["cpu_median"] / floor, "diff": err,
            })  # fmt: skip
        rows[-2]["speedup"] = res["torchcde"]["cpu_median"] / res["torchnde"]["cpu_median"]

    # --- forward + backward (dopri5)
    adjoints = {
        "backprop": tn.DirectAdjoint,
        "adjoint": tn.BacksolveAdjoint,
        "interpolated adjoint": tn.InterpolatedAdjoint,
        "checkpoint": tn.CheckpointAdjoint,
    }

    def fb(lib: str, mode: str):
        def run() -> None:
            f.zero_grad()
            if lib == "torchnde":
                out = tn.cdeint(X, f, z0, ends, adjoint=adjoints[mode](), **tol)[-1]
            else:
                out = torchcde.cdeint(Xc, f, z0, ends, adjoint=mode == "adjoint", **tol)[:, -1]
            out.pow(2).mean().backward()

        return run

    for mode in adjoints:
        libs = ("torchnde", "torchcde") if mode in ("backprop", "adjoint") else ("torchnde",)
        fns = {lib: fb(lib, mode) for lib in libs}
        nfe = {}
        grads = {}
        for lib, fn in fns.items():
            f.n = 0
            fn()
            nfe[lib] = f.n
            grads[lib] = torch.cat([q.grad.reshape(-1) for q in f.parameters()])
        ref = grads.get("torchcde", grads["torchnde"])
        gdiff = float((grads["torchnde"] - ref).norm() / ref.norm())
        res = C.time_interleaved(fns, min_rounds=max(3, rounds - 2), target_s=target)
        for lib in fns:
            rows.append({
                "case": f"dopri5 fwd+bwd, {mode}", "lib": lib, "time": res[lib]["median"],
                "cpu": res[lib]["cpu_median"], "nfe": nfe[lib],
                "vs_forward": res[lib]["cpu_median"] / solve_time[(lib, "dopri5")],
                "diff": gdiff if "torchcde" in fns else None,
            })  # fmt: skip
        if "torchcde" in res:
            rows[-2]["speedup"] = res["torchcde"]["cpu_median"] / res["torchnde"]["cpu_median"]

    cols = [
        ("case", "case", "s"), ("lib", "library", "s"), ("time", "time ms", "ms"),
        ("speedup", "torchcde/torchnde (cpu)", "x"), ("nfe", "NFE", "g"),
        ("floor", "floor ms", "ms"),
        ("overhead", "cpu/floor", "x"), ("vs_forward", "cpu vs forward", "x"),
        ("diff", "diff vs torchcde", "e"), ("cpu", "cpu ms", "ms"),
    ]  # fmt: skip
    table = C.markdown_table(rows, cols)
    print(table)
    print(
        "\nFloors and ratios use process CPU time (one thread), which a busy machine does "
        "not inflate; 'time ms' is wall time."
    )
    print(
        f"per-evaluation floor: torchnde {per_eval['torchnde'] * 1e3:.3f} ms, torchcde "
        f"{per_eval['torchcde'] * 1e3:.3f} ms; rtol={a.rtol}, atol={a.atol}. diff: max |z(T)| "
        "difference over max |z(T)| for solves, relative L2 difference of the parameter "
        "gradients otherwise"
    )
    path = C.write_json(
        "cde_solve",
        {
            "machine": C.machine_info(),
            "config": {
                "batch": BATCH, "length": LENGTH, "channels": CHANNELS, "hidden": HIDDEN,
                "width": WIDTH, "rtol": a.rtol, "atol": a.atol, "threads": a.threads,
                "torchcde": torchcde.__version__,
            },
            "per_eval_s": per_eval,
            "rows": rows,
            "table": table,
        },
        a.out,
    )  # fmt: skip
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
