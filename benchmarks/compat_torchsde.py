"""compat_torchsde: torchsde's README example, torchsde vs torchnde.compat.torchsde.

The example from torchsde's README, unchanged except for the import: batch 32, state 3,
Brownian 2, general noise, Itô, ``ys = sdeint(sde, y0, ts)`` with 20 output times on [0, 1]
and torchsde's defaults (method "euler", dt = 1e-3: 1000 steps, a fresh default Brownian
motion per call), float32. Rows, timed round-robin in one process:

- forward: ``sdeint(sde, y0, ts)`` under ``torch.no_grad()``;
- forward + backward: ``sdeint`` then ``ys.pow(2).mean().backward()`` (backprop);
- adjoint forward + backward: ``sdeint_adjoint`` then the same backward, on the same SDE
  declared Stratonovich and solved with method "midpoint" (the compat module's stochastic
  adjoint for Itô SDEs with general noise raises NotImplementedError).

    .venv/bin/python benchmarks/compat_torchsde.py --quick    # ~30 s
    .venv/bin/python benchmarks/compat_torchsde.py
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
    write_json,
)

# isort: split
import torch

batch_size, state_size, brownian_size = 32, 3, 2
t_size = 20


class SDE(torch.nn.Module):  # torchsde's README example
    noise_type = "general"
    sde_type = "ito"

    def __init__(self) -> None:
        super().__init__()
        self.mu = torch.nn.Linear(state_size, state_size)
        self.sigma = torch.nn.Linear(state_size, state_size * brownian_size)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mu(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sigma(y).view(batch_size, state_size, brownian_size)


class StratonovichSDE(SDE):
    sde_type = "stratonovich"


def _cases(lib: Any, sde: SDE, y0: torch.Tensor, ts: torch.Tensor) -> dict[str, Any]:
    strat = StratonovichSDE()
    strat.load_state_dict(sde.state_dict())

    def forward() -> None:
        with torch.no_grad():
            ys = lib.sdeint(sde, y0, ts)
        assert ys.shape == (t_size, batch_size, state_size)

    def backprop() -> None:
        sde.zero_grad()
        lib.sdeint(sde, y0, ts).pow(2).mean().backward()

    def adjoint() -> None:
        strat.zero_grad()
        lib.sdeint_adjoint(strat, y0, ts, method="midpoint").pow(2).mean().backward()

    return {"forward": forward, "forward + backward": backprop, "adjoint fwd + bwd": adjoint}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchsde,compat")
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    args = p.parse_args()
    set_threads(args.threads)
    import torchsde

    from torchnde.compat import torchsde as compat

    torch.manual_seed(0)
    sde = SDE()
    y0 = torch.full((batch_size, state_size), 0.1)
    ts = torch.linspace(0, 1, t_size)
    libs = {"torchsde": torchsde, "compat": compat}
    rows, raw = [], {}
    for case in ("forward", "forward + backward", "adjoint fwd + bwd"):
        fns = {name: _cases(lib, sde, y0, ts)[case] for name, lib in libs.items()}
        for fn in fns.values():
            fn()  # warm-up
        res = time_interleaved(
            fns,
            min_rounds=3 if args.quick else 7,
            max_rounds=5 if args.quick else 15,
            target_s=0.5 if args.quick else 2.0,
        )
        raw[case] = res
        ref = res["torchsde"]["median"]
        new = res["compat"]["median"]
        rows.append(
            {
                "case": case,
                "torchsde_ms": ref,
                "compat_ms": new,
                "speedup": ref / new,
                "rounds": res["compat"]["n"],
            }
        )
        print(f"{case}: torchsde {ref * 1e3:.1f} ms, compat {new * 1e3:.1f} ms", flush=True)
    cols = [
        ("case", "case", "s"),
        ("torchsde_ms", "torchsde (ms)", "ms"),
        ("compat_ms", "compat (ms)", "ms"),
        ("speedup", "speed-up", "x"),
        ("rounds", "rounds", "s"),
    ]
    table = markdown_table(rows, cols)
    print(table)
    path = write_json(
        "compat_torchsde",
        {"machine": machine_info(), "config": vars(args), "rows": rows, "raw": raw, "table": table},
        args.out,
    )
    print(path)


if __name__ == "__main__":
    main()
