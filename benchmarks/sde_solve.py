"""sde_solve: fixed-step SDE solves, forward and forward + backward, torchnde vs torchsde.

Problem (issue 5): diagonal noise, d = 32, batch 256, dt = 1e-2 over [0, 1] (100 steps),
float32. Drift: tanh MLP 32 -> 128 -> 128 -> 32; diffusion: 0.1 * sigmoid(a * y + b)
per component (truly diagonal: g_i depends on y_i only). A fresh Brownian motion is built
inside every timed call (new noise per call, as in training), so its construction and
queries are part of the cost.

Rows (one method per group, timed round-robin in one process):

- torchsde, ``sdeint`` with its default Brownian motion (a ``BrownianInterval`` without the
  ``dt`` hint: the configuration a user gets by default);
- torchsde with ``BrownianInterval(..., dt=dt)`` (its best hand-tuned configuration);
- torchnde ``sdeint`` with its default Brownian motion (``BrownianInterval``, no hint);
- the floor: the bare drift and diffusion evaluations the method makes
  (EM and reversible Heun: 100 f + 100 g; SRK: 300 f + 400 g), timed on the same module.

Forward + backward: loss = mean of y(1)², backward to the parameters; torchsde backprop
(``sdeint``), adjoint (``sdeint_adjoint``, its default adjoint method; for reversible Heun
``adjoint_reversible_heun``) against torchnde ``DirectAdjoint``, ``BacksolveAdjoint``
(stochastic adjoint) and, for reversible Heun, ``ReversibleAdjoint``. torchsde's SRK has
no adjoint.

    .venv/bin/python benchmarks/sde_solve.py --quick    # ~1 min
    .venv/bin/python benchmarks/sde_solve.py            # ~3 min
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    base_parser,
    machine_info,
    markdown_table,
    set_threads,
    time_interleaved,
    time_per_call,
    write_json,
)

# isort: split
import torch
from torch import nn

D, BATCH, DT, HIDDEN = 32, 256, 1e-2, 128

# (name, torchsde method, torchnde method, calculus, Lévy area, f evals, g evals per step)
METHODS = [
    ("euler_maruyama", "euler", "euler", "ito", None, 1, 1),
    ("srk", "srk", "srk", "ito", "space-time", 3, 4),
    ("reversible_heun", "reversible_heun", "reversible_heun", "stratonovich", None, 1, 1),
]


class SDE(nn.Module):
    noise_type = "diagonal"

    def __init__(self, sde_type: str) -> None:
        super().__init__()
        self.sde_type = sde_type
        torch.manual_seed(0)
        self.f_net = nn.Sequential(
            nn.Linear(D, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
            nn.Linear(HIDDEN, D),
        )  # fmt: skip
        self.a = nn.Parameter(torch.randn(D) * 0.5)
        self.b = nn.Parameter(torch.randn(D) * 0.5)

    def f(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        return self.f_net(y)

    def g(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        return 0.1 * torch.sigmoid(self.a * y + self.b)


def runners(method: tuple, grad: str | None, sde: SDE, y0: torch.Tensor) -> dict[str, Any]:
    import torchsde

    import torchnde as tn

    name, sde_method, nde_method, calculus, area, _, _ = method
    ts = torch.tensor([0.0, 1.0])
    out: dict[str, Any] = {}

    def loss_of(ys: torch.Tensor) -> None:
        if grad is None:
            return
        ys[-1].square().mean().backward()

    def sde_bm(hint: bool) -> Any:
        kw: dict[str, Any] = dict(dtype=y0.dtype, device=y0.device)
        if area is not None:
            kw["levy_area_approximation"] = area
        if hint:
            kw["dt"] = DT
        return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(BATCH, D), **kw)

    torchsde_modes = {"forward": "sdeint", "backprop": "sdeint", "adjoint": "sdeint_adjoint"}
    if grad is None or grad in ("backprop", "adjoint"):
        if not (grad == "adjoint" and sde_method == "srk"):
            fn = getattr(torchsde, torchsde_modes[grad or "forward"])
            extra: dict[str, Any] = {}
            if grad == "adjoint" and sde_method == "reversible_heun":
                extra["adjoint_method"] = "adjoint_reversible_heun"
            for hint in (False, True):
                label = f"torchsde{'+dt hint' if hint else ' default'}"

                def run(hint: bool = hint, fn: Any = fn, extra: dict = extra) -> None:
                    # Without the hint this is the interval torchsde's sdeint builds itself.
                    bm = sde_bm(hint)
                    with torch.set_grad_enabled(grad is not None):
                        ys = fn(sde, y0, ts, method=sde_method, dt=DT, bm=bm, **extra)
                        loss_of(ys)

                out[label] = run

    nde_adjoints: dict[str, Any] = {}
    if grad is None:
        nde_adjoints["torchnde"] = None
    elif grad == "backprop":
        nde_adjoints["torchnde Direct"] = tn.DirectAdjoint()
    elif grad == "adjoint":
        nde_adjoints["torchnde Backsolve"] = tn.BacksolveAdjoint()
        if sde_method == "reversible_heun":
            nde_adjoints["torchnde Reversible"] = tn.ReversibleAdjoint()
    for label, adjoint in nde_adjoints.items():

        def run_nde(adjoint: Any = adjoint) -> None:
            with torch.set_grad_enabled(grad is not None):
                ys = tn.sdeint(
                    sde.f, sde.g, y0, ts, noise="diagonal", calculus=calculus,
                    method=nde_method, dt=DT, adjoint=adjoint,
                )  # fmt: skip
                loss_of(ys)

        out[label] = run_nde
    return out


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchnde,torchsde")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--target-s", type=float, default=None)
    args = p.parse_args()
    set_threads(args.threads)
    target = args.target_s if args.target_s is not None else (0.3 if args.quick else 1.0)
    rounds = 3 if args.quick else 5
    torch.manual_seed(1)
    y0 = torch.randn(BATCH, D) * 0.5
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    for method in METHODS:
        name, sde_method, _, calculus, _, nf, ng = method
        sde = SDE("ito" if calculus == "ito" else "stratonovich")
        with torch.no_grad():
            t_f = time_per_call(lambda m=sde: m.f(0.0, y0), calls_per_block=100)["median"]
            t_g = time_per_call(lambda m=sde: m.g(0.0, y0), calls_per_block=100)["median"]
        steps = round(1 / DT)
        floor = steps * (nf * t_f + ng * t_g)
        for grad in (None, "backprop", "adjoint"):
            fns = runners(method, grad, sde, y0)
            if not fns:
                continue
            for fn in fns.values():  # warm-up
                fn()
                sde.zero_grad(set_to_none=True)

            def wrap(fn: Any, m: SDE = sde) -> Any:
                def call() -> None:
                    fn()
                    m.zero_grad(set_to_none=True)

                return call

            slow = [k for k in fns if k == "torchsde default"]
            res = time_interleaved(
                {k: wrap(v) for k, v in fns.items()},
                min_rounds=rounds,
                max_rounds=50,
                target_s=target,
                slow_s=0.5,
                slow_min_rounds=3,
                untargeted=slow,
            )
            raw[f"{name}/{grad or 'forward'}"] = res
            best_sde = min(
                (v["median"] for k, v in res.items() if k.startswith("torchsde")), default=None
            )
            backprop_key = "torchnde Direct"
            for label, r in res.items():
                row = {
                    "method": name,
                    "pass": grad or "forward",
                    "impl": label,
                    "median_s": r["median"],
                    "cpu_s": r["cpu_median"],
                    "vs_floor": r["median"] / floor if grad is None else None,
                    "best_torchsde_over_this": best_sde / r["median"] if best_sde else None,
                }
                rows.append(row)
            if grad == "backprop":
                raw[f"{name}/backprop_torchnde"] = res.get(backprop_key, {}).get("median")
        rows.append(
            {"method": name, "pass": "floor", "impl": f"{nf} f + {ng} g per step",
             "median_s": floor, "cpu_s": None, "vs_floor": 1.0}
        )  # fmt: skip
    # Brownian query cost alone: 100 consecutive increments of a fresh Brownian motion.
    import torchsde

    import torchnde as tn

    def q_nde() -> None:
        bm = tn.BrownianInterval(0.0, 1.0, (BATCH, D))
        for i in range(100):
            bm(i * DT, (i + 1) * DT)

    def q_sde(hint: bool) -> Any:
        def q() -> None:
            kw = {"dt": DT} if hint else {}
            bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(BATCH, D), **kw)
            for i in range(100):
                bm(i * DT, (i + 1) * DT)

        return q

    qfns = {"torchnde": q_nde, "torchsde default": q_sde(False), "torchsde+dt hint": q_sde(True)}
    for f in qfns.values():
        f()
    qres = time_interleaved(
        qfns, min_rounds=rounds, target_s=target, untargeted=["torchsde default"]
    )
    raw["brownian_queries"] = qres
    for label, r in qres.items():
        rows.append(
            {"method": "brownian (100 queries)", "pass": "forward", "impl": label,
             "median_s": r["median"], "cpu_s": r["cpu_median"]}
        )  # fmt: skip

    cols = [
        ("method", "method", "s"),
        ("pass", "pass", "s"),
        ("impl", "implementation", "s"),
        ("median_s", "median ms", "ms"),
        ("cpu_s", "cpu ms", "ms"),
        ("vs_floor", "× floor", "x"),
        ("best_torchsde_over_this", "best torchsde / this", "x"),
    ]
    table = markdown_table(rows, cols)
    print(table)
    path = write_json(
        "sde_solve",
        {"machine": machine_info(), "config": vars(args), "rows": rows, "raw": raw, "table": table},
        args.out,
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
