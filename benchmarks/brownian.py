"""brownian: cost of Brownian-motion queries, torchnde vs torchsde, side by side.

    .venv/bin/python benchmarks/brownian.py --quick   # n = 100 only: about 1 min
    .venv/bin/python benchmarks/brownian.py           # n = 100 and 1000: about 3 min

Shape (batch, d) = (256, 32), float32, CPU, [0, 1]. Every timed call builds a fresh Brownian
motion (same seed) and runs one query pattern on it:

  seq        n fixed-step queries bm(t_k, t_k+1), t_k = k/n, forward (a fixed-step solve)
  seq+back   the same, then the n queries again backwards (a solve plus its adjoint)
  random     n queries bm(a, b) with random a < b (fixed list, random order)

Peers (constructed inside the timed call):
  torchnde   BrownianInterval (no hint: it has none), VirtualBrownianTree (default tol
             2^-20, about 1e-6), BrownianPath
  torchsde   BrownianInterval(dt=1/n) (its hint), BrownianInterval() (no hint: what sdeint
             builds by default), BrownianTree(tol=1e-6), BrownianPath
  --levy adds BrownianInterval with space-time Lévy area in both libraries.

Timing: one untimed call per (peer, pattern), then round-robin (one call of each per round)
until >= 3 rounds and >= --target-s per peer; medians. `ratio` = t_peer / t_torchnde
BrownianInterval for the same pattern (> 1: torchnde faster).
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
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

BATCH, D = 256, 32


def patterns(n: int, seed: int = 0) -> dict[str, list[tuple[float, float]]]:
    ts = [k / n for k in range(n + 1)]
    seq = list(zip(ts[:-1], ts[1:]))
    rng = random.Random(seed)
    rand = []
    for _ in range(n):
        a, b = sorted(rng.random() for _ in range(2))
        rand.append((a, b))
    return {"seq": seq, "seq+back": seq + seq[::-1], "random": rand}


def makers(n: int, libs: list[str], levy: bool) -> dict[str, Callable[[], Any]]:
    import torch

    out: dict[str, Callable[[], Any]] = {}
    shape = (BATCH, D)
    if "torchnde" in libs:
        import torchnde as tn

        out["torchnde BrownianInterval"] = lambda: tn.BrownianInterval(0.0, 1.0, shape, seed=0)
        out["torchnde VirtualBrownianTree"] = lambda: tn.VirtualBrownianTree(
            0.0, 1.0, shape, seed=0
        )
        out["torchnde BrownianPath"] = lambda: tn.BrownianPath(0.0, 1.0, shape, seed=0)
        if levy:
            out["torchnde BrownianInterval (H)"] = lambda: tn.BrownianInterval(
                0.0, 1.0, shape, seed=0, levy_area="space-time"
            )
    if "torchsde" in libs:
        import torchsde

        out["torchsde BrownianInterval(dt)"] = lambda: torchsde.BrownianInterval(
            0.0, 1.0, size=shape, dt=1.0 / n, entropy=0
        )
        out["torchsde BrownianInterval"] = lambda: torchsde.BrownianInterval(
            0.0, 1.0, size=shape, entropy=0
        )
        out["torchsde BrownianTree"] = lambda: torchsde.BrownianTree(
            0.0, torch.zeros(shape), t1=1.0, tol=1e-6, entropy=0
        )
        # (its BrownianPath is a BrownianInterval on [t0, t0 + 1] with an unbounded cache)
        out["torchsde BrownianPath"] = lambda: torchsde.BrownianPath(0.0, torch.zeros(shape))
        if levy:
            out["torchsde BrownianInterval(dt) (H)"] = lambda: torchsde.BrownianInterval(
                0.0,
                1.0,
                size=shape,
                dt=1.0 / n,
                entropy=0,
                levy_area_approximation="space-time",
            )
    return out


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchnde,torchsde")
    p.add_argument("--quick", action="store_true", help="n = 100 only")
    p.add_argument("--steps", default=None, help="numbers of queries (default 100,1000)")
    p.add_argument("--levy", action="store_true", help="add space-time Lévy area rows")
    p.add_argument("--target-s", type=float, default=None, help="timing budget per peer")
    p.add_argument(
        "--skip-slow-s", type=float, default=20.0, help="skip a peer whose first call is slower"
    )
    args = p.parse_args()
    set_threads(args.threads)
    import torch

    libs = args.libs.split(",")
    steps = [int(s) for s in (args.steps or ("100" if args.quick else "100,1000")).split(",")]
    target = args.target_s if args.target_s is not None else (0.3 if args.quick else 0.6)
    rows: list[dict[str, Any]] = []
    for n in steps:
        pats = patterns(n)
        mk = makers(n, libs, args.levy)
        for pname, queries in pats.items():
            tq = [(torch.tensor(a), torch.tensor(b)) for a, b in queries]

            def run(make: Callable[[], Any], tq: list = tq) -> None:
                bm = make()
                for a, b in tq:
                    bm(a, b)

            fns: dict[str, Callable[[], None]] = {}
            first: dict[str, float] = {}
            for name, make in mk.items():
                fn = lambda make=make: run(make)
                t0 = time.perf_counter()
                fn()
                first[name] = time.perf_counter() - t0
                if first[name] > args.skip_slow_s:
                    rows.append({"n": n, "pattern": pname, "peer": name, "note": "skipped"})
                    continue
                fns[name] = fn
            res = time_interleaved(fns, min_rounds=3, target_s=target, slow_min_rounds=3)
            base = res.get("torchnde BrownianInterval", {}).get("median")
            for name, r in res.items():
                rows.append(
                    {
                        "n": n,
                        "pattern": pname,
                        "peer": name,
                        "ms": r["median"],
                        "us_per_query": r["median"] / len(queries),
                        "ratio": None if base is None else r["median"] / base,
                        "cpu_share": r["cpu_median"] / r["median"] if r["median"] else None,
                        "timing": r,
                    }
                )
            print(f"n={n} {pname}: done", flush=True)
    cols = [
        ("n", "n", "s"),
        ("pattern", "pattern", "s"),
        ("peer", "peer", "s"),
        ("ms", "ms", "ms"),
        ("us_per_query", "µs/query", "us"),
        ("ratio", "t/t_tnde", "x"),
        ("cpu_share", "cpu/wall", "x"),
    ]
    table = markdown_table(rows, cols)
    print(table)
    out = write_json(
        "brownian",
        {
            "machine": machine_info(),
            "config": {"batch": BATCH, "d": D, "dtype": "float32", "steps": steps},
            "rows": rows,
            "table": table,
        },
        args.out,
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
