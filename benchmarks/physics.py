"""Physics-structured models: HNN and LNN training steps against plain-torch reimplementations.

- HNN trained on trajectories: one step (forward solve + backward, double backward through
  the Hamiltonian's gradient) of ``torchnde.models.HNN`` through ``torchnde.solve`` against the
  same network's field written by hand for ``torchdiffeq.odeint`` (the papers' training loops
  in PyTorch), same fixed-step RK4, same batch.
- LNN trained on accelerations (Cranmer et al.): ``torchnde.models.LNN`` (Hessians batched by
  ``torch.func.vmap``) against the per-sample loop with ``torch.autograd.functional.hessian``
  that a direct PyTorch port writes.
- LNN trained on trajectories: one step (forward solve + backward through the Hessian-based
  accelerations) of ``torchnde.models.LNN`` through ``torchnde.solve`` against
  ``torchdiffeq.odeint`` of (a) the per-sample Hessian loop (the direct port) and (b) the same
  ``torch.func``-batched Euler-Lagrange field written by hand (the engine's own overhead);
  same fixed-step RK4, same batch.

Timings run round-robin in one process (``time_interleaved``) and are reported as ratios.

    PYTHONPATH=src .venv/bin/python benchmarks/physics.py       # about a minute on one core
"""

from __future__ import annotations

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


def _mlp(d_in: int, d_out: int, hidden: int, act: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(d_in, hidden), act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, d_out)
    )


def bench_hnn(rows: list[dict[str, Any]], target_s: float) -> None:
    for batch, hidden in ((128, 64), (1024, 200)):
        rows.append(_hnn_case(batch, hidden, target_s))


def _hnn_case(batch: int, hidden: int, target_s: float) -> dict[str, Any]:
    import torchdiffeq

    net = _mlp(2, 1, hidden)
    hnn = M.HNN(net)
    x0 = torch.randn(batch, 2)
    target = torch.randn(batch, 2)
    n, t1 = 20, 1.0

    class Field(nn.Module):
        def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                xg = x if x.requires_grad else x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(net(xg).sum(), xg, create_graph=True)
            return torch.cat([g[:, 1:], -g[:, :1]], 1)

    field = Field()
    ts = torch.tensor([0.0, t1])

    def ours() -> None:
        sol = tn.solve(tn.ODETerm(hnn), tn.RK4(), 0.0, t1, x0, dt0=t1 / n,
                       controller=tn.ConstantStepSize())  # fmt: skip
        ((sol.ys[-1] - target) ** 2).mean().backward()

    def theirs() -> None:
        ys = torchdiffeq.odeint(field, x0, ts, method="rk4", options={"step_size": t1 / n})
        ((ys[-1] - target) ** 2).mean().backward()

    # Same numbers first.
    with torch.no_grad():
        a = tn.solve(tn.ODETerm(hnn), tn.RK4(), 0.0, t1, x0, dt0=t1 / n,
                     controller=tn.ConstantStepSize()).ys[-1]  # fmt: skip
        b = torchdiffeq.odeint(field, x0, ts, method="rk4", options={"step_size": t1 / n})[-1]
    ours(), theirs()
    res = time_interleaved({"torchnde": ours, "torchdiffeq": theirs}, target_s=target_s)
    return {
        "case": f"HNN trajectory step, batch {batch}, hidden {hidden}, RK4 x {n}",
        "torchnde_s": res["torchnde"]["median"],
        "reference_s": res["torchdiffeq"]["median"],
        "ratio": res["torchnde"]["median"] / res["torchdiffeq"]["median"],
        "max_abs_diff": float((a - b).abs().max()),
    }  # fmt: skip


def bench_lnn(rows: list[dict[str, Any]], target_s: float) -> None:
    for batch, hidden in ((64, 64), (256, 128)):
        rows.append(_lnn_case(batch, hidden, target_s))


def _lnn_case(batch: int, hidden: int, target_s: float) -> dict[str, Any]:
    from torch.autograd.functional import hessian, jacobian

    net = _mlp(4, 1, hidden, nn.Softplus)
    lnn = M.LNN(net)
    x = torch.randn(batch, 4)
    target = torch.randn(batch, 2)

    def looped(x: torch.Tensor) -> torch.Tensor:
        out = []
        for xi in x:
            f = lambda z: net(z[None])[0, 0]
            g = jacobian(f, xi, create_graph=True)
            h = hessian(f, xi, create_graph=True)
            rhs = g[:2] - h[2:, :2] @ xi[2:]
            out.append(torch.linalg.solve(h[2:, 2:], rhs))
        return torch.stack(out)

    def ours() -> None:
        ((lnn.acceleration(x) - target) ** 2).mean().backward()

    def theirs() -> None:
        ((looped(x) - target) ** 2).mean().backward()

    with torch.no_grad():
        diff = float((lnn.acceleration(x) - looped(x)).abs().max())
    ours(), theirs()
    res = time_interleaved({"torchnde": ours, "loop": theirs}, target_s=target_s)
    return {
        "case": f"LNN acceleration step, batch {batch}, hidden {hidden}",
        "torchnde_s": res["torchnde"]["median"],
        "reference_s": res["loop"]["median"],
        "ratio": res["torchnde"]["median"] / res["loop"]["median"],
        "max_abs_diff": diff,
    }  # fmt: skip


def bench_lnn_trajectory(rows: list[dict[str, Any]], target_s: float) -> None:
    rows.extend(_lnn_traj_case(16, 64, target_s))


def _lnn_traj_case(batch: int, hidden: int, target_s: float) -> list[dict[str, Any]]:
    import torchdiffeq
    from torch.autograd.functional import hessian, jacobian
    from torch.func import hessian as fhessian
    from torch.func import jacrev, vmap

    mlp = _mlp(4, 1, hidden, nn.Softplus)

    class Lagrangian(nn.Module):  # |qdot|^2 / 2 + a small learned part: a regular Lagrangian
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.5 * (x[:, 2:] ** 2).sum(1, keepdim=True) + 0.1 * mlp(x)

    net = Lagrangian()
    lnn = M.LNN(net)
    x0 = torch.randn(batch, 4)
    target = torch.randn(batch, 4)
    n, t1 = 5, 0.1
    ts = torch.tensor([0.0, t1])

    def f1(z: torch.Tensor) -> torch.Tensor:
        return net(z[None])[0, 0]

    class Looped(nn.Module):  # the direct port: one Hessian per sample
        def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            out = []
            for xi in x:
                g = jacobian(f1, xi, create_graph=True)
                h = hessian(f1, xi, create_graph=True)
                out.append(torch.linalg.solve(h[2:, 2:], g[:2] - h[2:, :2] @ xi[2:]))
            return torch.cat([x[:, 2:], torch.stack(out)], 1)

    class Batched(nn.Module):  # the same field, torch.func-batched, by hand
        def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            g, h = vmap(jacrev(f1))(x), vmap(fhessian(f1))(x)
            rhs = g[:, :2] - (h[:, 2:, :2] @ x[:, 2:, None])[..., 0]
            return torch.cat([x[:, 2:], torch.linalg.solve(h[:, 2:, 2:], rhs)], 1)

    def ours() -> None:
        sol = tn.solve(tn.ODETerm(lnn), tn.RK4(), 0.0, t1, x0, dt0=t1 / n,
                       controller=tn.ConstantStepSize())  # fmt: skip
        ((sol.ys[-1] - target) ** 2).mean().backward()

    def reference(field: nn.Module) -> Any:
        def run() -> None:
            ys = torchdiffeq.odeint(field, x0, ts, method="rk4", options={"step_size": t1 / n})
            ((ys[-1] - target) ** 2).mean().backward()

        return run

    looped, batched = reference(Looped()), reference(Batched())
    with torch.no_grad():
        a = tn.solve(tn.ODETerm(lnn), tn.RK4(), 0.0, t1, x0, dt0=t1 / n,
                     controller=tn.ConstantStepSize()).ys[-1]  # fmt: skip
    with torch.enable_grad():
        opts = {"step_size": t1 / n}
        b = torchdiffeq.odeint(Looped(), x0, ts, method="rk4", options=opts)[-1].detach()
        c = torchdiffeq.odeint(Batched(), x0, ts, method="rk4", options=opts)[-1].detach()
    ours(), looped(), batched()
    res = time_interleaved(
        {"torchnde": ours, "loop": looped, "batched": batched}, target_s=target_s
    )
    case = f"LNN trajectory step, batch {batch}, hidden {hidden}, RK4 x {n}"
    return [
        {
            "case": f"{case}, vs torchdiffeq + per-sample Hessian loop",
            "torchnde_s": res["torchnde"]["median"],
            "reference_s": res["loop"]["median"],
            "ratio": res["torchnde"]["median"] / res["loop"]["median"],
            "max_abs_diff": float((a - b).abs().max()),
        },
        {
            "case": f"{case}, vs torchdiffeq + torch.func field by hand",
            "torchnde_s": res["torchnde"]["median"],
            "reference_s": res["batched"]["median"],
            "ratio": res["torchnde"]["median"] / res["batched"]["median"],
            "max_abs_diff": float((a - c).abs().max()),
        },
    ]


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchnde,torchdiffeq")
    p.add_argument("--target-s", type=float, default=0.5, help="seconds per timed function")
    a = p.parse_args()
    set_threads(a.threads)
    rows: list[dict[str, Any]] = []
    bench_hnn(rows, a.target_s)
    bench_lnn(rows, a.target_s)
    bench_lnn_trajectory(rows, a.target_s)
    out = write_json("physics", {"machine": machine_info(), "timing": rows}, a.out)
    print(markdown_table(rows, [("case", "case", "s"), ("torchnde_s", "torchnde ms", "ms"),
                                ("reference_s", "reference ms", "ms"), ("ratio", "ratio", "x"),
                                ("max_abs_diff", "max |diff|", "e")]))  # fmt: skip
    print(out)


if __name__ == "__main__":
    main()
