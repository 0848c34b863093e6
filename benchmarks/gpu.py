"""gpu: a prepared check of torchnde on a CUDA device, short (a few minutes).

    .venv/bin/python benchmarks/gpu.py            # exits 0 with a message without CUDA
    .venv/bin/python benchmarks/gpu.py --quick    # B=256 only, fewer rounds

1. **Placement.** A Dopri5 solve (joint and per sample), a fixed-step RK4 solve, a backward
   pass and an SDE solve on ``cuda``: every output, ``Solution`` field and gradient must be
   on the device (nothing silently on the CPU).
2. **Host syncs per step.** ``torch.profiler`` counts the ``cudaStreamSynchronize`` /
   ``cudaMemcpy*`` (device to host) calls of one adaptive solve and one fixed-step solve;
   divided by the steps taken. The adaptive loop reads a few scalars once per step; the
   fixed-step path (``_core/fixed.py``) once per ``CHECK_EVERY`` steps.
3. **Timings** (CUDA events around each call, interleaved rounds, median): torchnde Dopri5
   vs torchdiffeq dopri5 and torchode Dopri5 at B = 256 and 4096 (d = 32, MLP width 128,
   rtol = atol = 1e-6, 10 save times), and fixed-step RK4 (100 steps) torchnde eager,
   torchnde with ``compile_step=True``, a CUDA graph of the whole fixed-step solve (captured
   once after warm-up: valid because the grid and all shapes are fixed) and torchdiffeq rk4.

Prints a markdown table and writes ``benchmarks/results/gpu-<stamp>.json``.
"""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    base_parser,
    machine_info,
    make_mlp_weights,
    markdown_table,
    torch_mlp,
    write_json,
)

# isort: split
import torch


def on_device(x: Any, where: str) -> list[str]:
    bad = []
    if isinstance(x, torch.Tensor):
        if x.device.type != "cuda":
            bad.append(f"{where}: {x.device}")
    elif isinstance(x, dict):
        for k, v in x.items():
            bad += on_device(v, f"{where}[{k!r}]")
    elif isinstance(x, (tuple, list)):
        for i, v in enumerate(x):
            bad += on_device(v, f"{where}[{i}]")
    return bad


def count_syncs(fn: Any) -> int:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    n = 0
    for ev in prof.events():
        name = ev.name
        if "StreamSynchronize" in name or ("Memcpy" in name and "DtoH" in name):
            n += 1
        elif name in ("aten::item", "aten::_local_scalar_dense"):
            n += 1
    return n


def cuda_time(fns: dict[str, Any], rounds: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
    torch.cuda.synchronize()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out[k].append(a.elapsed_time(b) / 1e3)
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> int:
    p = base_parser("torchnde on CUDA", "torchnde,torchdiffeq,torchode")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu.py: no CUDA device here (torch.cuda.is_available() is False); nothing run.")
        return 0
    import torchnde as tn

    dev = torch.device("cuda")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    d, hidden = 32, 128
    net = torch_mlp(make_mlp_weights(d, hidden, gain=8.0)).to(dev)
    term = tn.ODETerm(lambda t, y, args: net(y))
    ts = torch.linspace(0, 1, 10, device=dev)
    ctrl = tn.PIDController(rtol=1e-6, atol=1e-6)

    # 1. placement
    y0 = torch.randn(256, d, device=dev, requires_grad=True)
    for label, kw in (
        ("dopri5 joint", dict(solver=tn.Dopri5(), controller=ctrl)),
        ("dopri5 per sample", dict(solver=tn.Dopri5(),
                                   controller=tn.PIDController(1e-6, 1e-6, per_sample=True))),
        ("rk4 fixed", dict(solver=tn.RK4(), controller=tn.ConstantStepSize(), dt0=0.01)),
    ):  # fmt: skip
        solver = kw.pop("solver")
        sol = tn.solve(term, solver, 0.0, 1.0, y0, saveat=tn.SaveAt(ts=ts), **kw)
        problems += on_device([sol.ts, sol.ys, sol.status], label)
        (g,) = torch.autograd.grad(sol.ys.square().mean(), y0)
        problems += on_device(g, f"{label} grad")
    ys = tn.sdeint(lambda t, y: -y, lambda t, y: 0.1 * torch.ones_like(y), y0.detach(),
                   ts, noise="diagonal", method="euler", dt=0.01)  # fmt: skip
    problems += on_device(ys, "sdeint euler")
    print("placement:", "all on cuda" if not problems else problems)

    # 2. host syncs per step
    with torch.no_grad():
        yb = y0.detach()
        sol = tn.solve(term, tn.Dopri5(), 0.0, 1.0, yb, saveat=tn.SaveAt(ts=ts), controller=ctrl)
        steps = int(sol.stats["num_steps"])
        n_ad = count_syncs(
            lambda: tn.solve(term, tn.Dopri5(), 0.0, 1.0, yb, saveat=tn.SaveAt(ts=ts),
                             controller=ctrl)
        )  # fmt: skip
        n_fx = count_syncs(
            lambda: tn.solve(term, tn.RK4(), 0.0, 1.0, yb, dt0=0.01,
                             controller=tn.ConstantStepSize(), saveat=tn.SaveAt(ts=ts))
        )  # fmt: skip
    print(f"host syncs: dopri5 {n_ad} in {steps} steps ({n_ad / steps:.2f}/step); "
          f"rk4 fixed {n_fx} in 100 steps ({n_fx / 100:.2f}/step)")  # fmt: skip

    # 3. timings
    libs = set(a.libs.split(","))
    rounds = 5 if a.quick else 11

    def time_batch(B: int) -> None:
        yb = torch.randn(B, d, device=dev)
        fns: dict[str, Any] = {}
        with torch.no_grad():
            fns["torchnde dopri5"] = lambda: tn.solve(
                term, tn.Dopri5(), 0.0, 1.0, yb, saveat=tn.SaveAt(ts=ts), controller=ctrl
            )
            if "torchdiffeq" in libs:
                import torchdiffeq

                fns["torchdiffeq dopri5"] = lambda: torchdiffeq.odeint(
                    lambda t, y: net(y), yb, ts, rtol=1e-6, atol=1e-6, method="dopri5"
                )
            if "torchode" in libs:
                import torchode as to

                tterm = to.ODETerm(lambda t, y: net(y))
                step = to.Dopri5(term=tterm)
                adj = to.AutoDiffAdjoint(step, to.IntegralController(1e-6, 1e-6, term=tterm))
                tev = ts.expand(B, -1)
                fns["torchode dopri5"] = lambda: adj.solve(to.InitialValueProblem(yb, tev))
            res = cuda_time(fns, rounds)
            for k, v in res.items():
                rows.append({"B": B, "case": k, "ms": v, "vs torchnde": v / res["torchnde dopri5"]})

            fixed_kw = dict(dt0=0.01, controller=tn.ConstantStepSize(), saveat=tn.SaveAt(t1=True))
            fx: dict[str, Any] = {
                "torchnde rk4 eager": lambda: tn.solve(term, tn.RK4(), 0.0, 1.0, yb, **fixed_kw),
                "torchnde rk4 compile_step": lambda: tn.solve(
                    term, tn.RK4(), 0.0, 1.0, yb, compile_step=True, **fixed_kw
                ),
            }
            # A CUDA graph of the whole fixed-step solve: static input, captured once.
            static_y = yb.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    tn.solve(term, tn.RK4(), 0.0, 1.0, static_y, **fixed_kw)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    static_out = tn.solve(term, tn.RK4(), 0.0, 1.0, static_y, **fixed_kw).ys
                fx["torchnde rk4 CUDA graph"] = graph.replay
                _ = static_out
            except Exception as err:  # host syncs inside the solve forbid capture
                print(f"CUDA graph capture failed: {type(err).__name__}: {err}")
            if "torchdiffeq" in libs:
                fx["torchdiffeq rk4"] = lambda: torchdiffeq.odeint(
                    lambda t, y: net(y), yb, ts[[0, -1]], method="rk4",
                    options={"step_size": 0.01},
                )  # fmt: skip
            res = cuda_time(fx, rounds)
            for k, v in res.items():
                rows.append(
                    {"B": B, "case": k, "ms": v, "vs torchnde": v / res["torchnde rk4 eager"]}
                )

    for B in (256,) if a.quick else (256, 4096):
        time_batch(B)

    table = markdown_table(rows, [("B", "B", "g"), ("case", "case", "s"), ("ms", "ms", "ms"),
                                  ("vs torchnde", "t / t_torchnde", "x")])  # fmt: skip
    print(table)
    info = machine_info()
    info["gpu"] = torch.cuda.get_device_name(0)
    write_json("gpu", {"machine": info, "rows": rows, "placement_problems": problems}, a.out)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
