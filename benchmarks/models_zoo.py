"""Model-zoo benchmarks: CNF and NeuralODE training steps against torchdiffeq written by hand,
multiple shooting's sequential evaluations, hypersolver accuracy at equal evaluations.

Timings run the peers round-robin in one process (``time_interleaved``) and are reported as
ratios; evaluation counts and errors do not depend on the machine.

    PYTHONPATH=src .venv/bin/python benchmarks/models_zoo.py     # a few minutes on one core
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before torch.
from _common import (
    base_parser,
    machine_info,
    markdown_table,
    set_threads,
    time_interleaved,
    write_json,
)

# isort: split
import torch
from torch import nn

import torchnde as tn
from torchnde import models as M


def _mlp(d_in: int, d_out: int, hidden: int = 64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, d_out),
    )  # fmt: skip


# --------------------------------------------------------------------------- CNF training step
def _tdq_cnf_step(net: nn.Module, x: torch.Tensor, method: str, opts: dict, adjoint: bool) -> Any:
    """A hand-written exact-trace CNF for torchdiffeq (FFJORD's formulation)."""
    import torchdiffeq

    class Dyn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, t: torch.Tensor, state: tuple) -> tuple:
            z = state[0]
            with torch.enable_grad():
                z = z if z.requires_grad else z.detach().requires_grad_(True)
                tt = t.expand(z.shape[0], 1).to(z.dtype)
                dz = self.net(torch.cat([z, tt], 1))
                tr = 0.0
                for i in range(z.shape[1]):
                    (g,) = torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)
                    tr = tr + g[:, i]
            return dz, tr

    dyn = Dyn()
    odeint = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    kw: dict[str, Any] = {"adjoint_params": tuple(net.parameters())} if adjoint else {}
    t = torch.tensor([0.0, 1.0])

    def step() -> float:
        z, delta = odeint(dyn, (x, x.new_zeros(x.shape[0])), t, method=method, **opts, **kw)
        z, delta = z[-1], delta[-1]
        logp = -0.5 * z.pow(2).sum(1) - math.log(2 * math.pi) + delta
        loss = -logp.mean()
        net.zero_grad()
        loss.backward()
        return loss.item()

    return step


def _tn_cnf_step(net: nn.Module, x: torch.Tensor, solver: Any, kw: dict, adjoint: Any) -> Any:
    cnf = M.CNF(M.DepthCat(net), 2, solver=solver, adjoint=adjoint, **kw)

    def step() -> float:
        loss = -cnf.log_prob(x).mean()
        net.zero_grad()
        loss.backward()
        return loss.item()

    return step


def bench_cnf(rows: list[dict], target_s: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 2)
    configs = [
        ("rk4 dt=0.1", "rk4", {"options": {"step_size": 0.1}}, tn.RK4(), {"dt0": 0.1}),
        ("dopri5 1e-5", "dopri5", {"rtol": 1e-5, "atol": 1e-5}, tn.Dopri5(),
         {"rtol": 1e-5, "atol": 1e-5}),
    ]  # fmt: skip
    for name, tdq_m, tdq_o, tn_s, tn_kw in configs:
        for mode in ("backprop", "adjoint"):
            net = _mlp(3, 2)
            fns = {
                "torchnde": _tn_cnf_step(
                    net, x, tn_s, tn_kw,
                    tn.DirectAdjoint() if mode == "backprop" else tn.BacksolveAdjoint(),
                ),
                "torchdiffeq": _tdq_cnf_step(net, x, tdq_m, tdq_o, mode == "adjoint"),
            }  # fmt: skip
            losses = {k: f() for k, f in fns.items()}
            res = time_interleaved(fns, target_s=target_s, min_rounds=3, max_rounds=20)
            rows.append({
                "case": f"CNF exact trace, batch 512, {name}, {mode}",
                "torchnde_s": res["torchnde"]["median"],
                "torchdiffeq_s": res["torchdiffeq"]["median"],
                "ratio": res["torchnde"]["median"] / res["torchdiffeq"]["median"],
                "loss_diff": abs(losses["torchnde"] - losses["torchdiffeq"]),
            })  # fmt: skip
            print(rows[-1], flush=True)


def bench_node(rows: list[dict], target_s: float) -> None:
    import torchdiffeq

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    net = _mlp(8, 8)
    node = M.NeuralODE(M.Autonomous(net), rtol=1e-5, atol=1e-5, solver=tn.Dopri5())

    def ours() -> float:
        loss = node(x).pow(2).mean()
        net.zero_grad()
        loss.backward()
        return loss.item()

    def raw() -> float:
        sol = tn.solve(tn.ODETerm(lambda t, y, a: net(y)), tn.Dopri5(), 0.0, 1.0, x,
                       controller=tn.PIDController(rtol=1e-5, atol=1e-5))  # fmt: skip
        loss = sol.ys[-1].pow(2).mean()
        net.zero_grad()
        loss.backward()
        return loss.item()

    def tdq() -> float:
        y = torchdiffeq.odeint(lambda t, y: net(y), x, torch.tensor([0.0, 1.0]), rtol=1e-5,
                               atol=1e-5, method="dopri5")  # fmt: skip
        loss = y[-1].pow(2).mean()
        net.zero_grad()
        loss.backward()
        return loss.item()

    fns = {"NeuralODE": ours, "torchnde.solve": raw, "torchdiffeq": tdq}
    for f in fns.values():
        f()
    res = time_interleaved(fns, target_s=target_s, min_rounds=3, max_rounds=30)
    rows.append({
        "case": "NeuralODE d=8 batch 256 dopri5 1e-5, backprop",
        "torchnde_s": res["NeuralODE"]["median"],
        "torchdiffeq_s": res["torchdiffeq"]["median"],
        "ratio": res["NeuralODE"]["median"] / res["torchdiffeq"]["median"],
        "layer_over_solve": res["NeuralODE"]["median"] / res["torchnde.solve"]["median"],
    })  # fmt: skip
    print(rows[-1], flush=True)


# ---------------------------------------------------------------------- multiple shooting
def bench_shooting(rows: list[dict]) -> None:
    torch.manual_seed(0)
    f = M.Autonomous(_mlp(2, 2, 32).double())
    x = torch.randn(16, 2, dtype=torch.float64)
    t1, m = 8.0, 4
    for n in (8, 16, 32):
        dt = t1 / (n * m)
        seq = tn.solve(tn.ODETerm(lambda t, y, a: f(t, y)), tn.RK4(), 0.0, t1, x, dt0=dt)
        for method in ("newton", "zeroth", "parareal"):
            msl = M.MultipleShooting(f, n, method, t1=t1, solver=tn.RK4(), dt0=dt, tol=1e-10)
            with torch.no_grad():
                y = msl(x)
            s = msl.last_stats
            rows.append({
                "segments": n, "method": method, "iterations": s["iterations"],
                "sequential_fevals": s["sequential_fevals"],
                "sequential_solve_fevals": seq.stats["num_fevals"],
                "ratio": s["sequential_fevals"] / seq.stats["num_fevals"],
                "total_fevals": s["total_fevals"],
                "max_abs_diff": (y - seq.ys[-1]).abs().max().item(),
            })  # fmt: skip
            print(rows[-1], flush=True)


# ----------------------------------------------------------------------------- hypersolvers
class _Pendulum(nn.Module):
    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 1], -torch.sin(x[:, 0])], 1)


class _Correction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 2))

    def forward(self, t: torch.Tensor, x: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, dx], 1))


def bench_hyper(rows: list[dict]) -> None:
    ts = torch.linspace(0, 3, 16, dtype=torch.float64)
    box = torch.tensor([2.0, 1.5], dtype=torch.float64)

    def ref(x0: torch.Tensor) -> torch.Tensor:
        return tn.solve(
            tn.ODETerm(lambda t, y, a: _Pendulum()(t, y)), tn.Dopri5(), 0.0, 3.0, x0,
            saveat=tn.SaveAt(ts=ts), controller=tn.PIDController(rtol=1e-10, atol=1e-12),
        ).ys  # fmt: skip

    for name, base in (("euler", tn.Euler()), ("heun", tn.Heun()), ("rk4", tn.RK4())):
        torch.manual_seed(0)
        x_train = (torch.rand(512, 2, dtype=torch.float64) * 2 - 1) * box
        y_train = ref(x_train)
        hs = M.HyperSolver(_Pendulum(), _Correction().double(), base)
        opt = torch.optim.Adam(hs.parameters(), lr=1e-2)
        for _ in range(500):
            loss = hs.residual_loss(ts, y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
        x_test = (torch.rand(256, 2, dtype=torch.float64) * 2 - 1) * box
        y_test = ref(x_test)
        with torch.no_grad():
            e_h = float((hs(x_test, ts) - y_test).abs().max())
            nfe = hs.nfe
            e_b = float((hs(x_test, ts, corrected=False) - y_test).abs().max())
        rows.append({"base": name, "steps": 15, "fevals": nfe, "base_max_err": e_b,
                     "hyper_max_err": e_h, "gain": e_b / e_h})  # fmt: skip
        print(rows[-1], flush=True)


def main() -> None:
    p = base_parser("model-zoo benchmarks", "torchnde,torchdiffeq")
    p.add_argument("--target-s", type=float, default=0.5)
    a = p.parse_args()
    set_threads(a.threads)
    timing: list[dict] = []
    bench_node(timing, a.target_s)
    bench_cnf(timing, a.target_s)
    shooting: list[dict] = []
    bench_shooting(shooting)
    hyper: list[dict] = []
    bench_hyper(hyper)
    out = write_json(
        "models_zoo",
        {"machine": machine_info(), "timing": timing, "shooting": shooting, "hyper": hyper},
        a.out,
    )
    print(markdown_table(timing, [("case", "case", "s"), ("torchnde_s", "torchnde ms", "ms"),
                                  ("torchdiffeq_s", "torchdiffeq ms", "ms"),
                                  ("ratio", "ratio", "x"), ("layer_over_solve", "layer/solve",
                                                             "x")]))  # fmt: skip
    print(markdown_table(shooting, [("segments", "N", "g"), ("method", "method", "s"),
                                    ("iterations", "iters", "g"),
                                    ("sequential_fevals", "seq. fevals", "g"),
                                    ("sequential_solve_fevals", "sequential solve", "g"),
                                    ("ratio", "ratio", "x"), ("total_fevals", "total", "g"),
                                    ("max_abs_diff", "max |diff|", "e")]))  # fmt: skip
    print(markdown_table(hyper, [("base", "base", "s"), ("fevals", "f evals", "g"),
                                 ("base_max_err", "base error", "e"),
                                 ("hyper_max_err", "hypersolver error", "e"),
                                 ("gain", "gain", "1f")]))  # fmt: skip
    print(out)


if __name__ == "__main__":
    main()
