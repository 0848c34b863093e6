"""Shared helpers for torchnde's benchmarks: timing, MLP vector fields, reference solutions,
thread settings, machine info, JSON output and markdown tables.

Self-contained (stdlib + numpy + torch; scipy for the reference), so that every benchmark
script can be run directly: ``.venv/bin/python benchmarks/<name>.py``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def _early_threads() -> None:
    """Pin BLAS/OpenMP pools to ``--threads`` (default 1) *before* numpy/torch are imported:
    numpy's OpenBLAS reads its thread count at import, and on a small shared machine a
    multi-threaded BLAS makes the scipy reference up to ~10x slower. An explicit --threads
    wins over the environment; the default only fills in unset variables. 0 = leave as is."""
    n, explicit = "1", False
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            n, explicit = sys.argv[i + 1], True
        elif a.startswith("--threads="):
            n, explicit = a.split("=", 1)[1], True
    if n.strip() in ("", "0"):
        return
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if explicit:
            os.environ[k] = n
        else:
            os.environ.setdefault(k, n)


_early_threads()

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")

# width of the two hidden layers of the benchmark MLP for a given state dimension
HIDDEN = {2: 64, 32: 128}
REF_CACHE_DIR = os.path.join(HERE, ".refcache")


def hidden_for(d: int) -> int:
    return HIDDEN.get(d, 64 if d <= 8 else 128)


# ----------------------------------------------------------------------------------- timing
def summarize(ts: Sequence[float]) -> dict[str, float]:
    """Median, min, quartiles (seconds) and count of a list of timings."""
    s = sorted(ts)
    q1, med, q3 = np.quantile(s, [0.25, 0.5, 0.75])
    return {"median": float(med), "min": float(s[0]), "q1": float(q1), "q3": float(q3), "n": len(s)}


def time_fn(
    fn: Callable[[], Any],
    warmup: int = 1,
    min_repeats: int = 5,
    max_repeats: int = 50,
    target_s: float = 0.25,
) -> dict[str, float]:
    """``warmup`` untimed calls, then timed calls (``time.perf_counter``) until at least
    ``min_repeats`` calls and ``target_s`` seconds are measured (at most ``max_repeats``)."""
    for _ in range(warmup):
        fn()
    ts: list[float] = []
    while len(ts) < max_repeats and (len(ts) < min_repeats or sum(ts) < target_s):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return summarize(ts)


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    min_rounds: int = 5,
    max_rounds: int = 50,
    target_s: float = 0.25,
    slow_s: float = 0.05,
    slow_min_rounds: int = 3,
    untargeted: Sequence[str] = (),
) -> dict[str, dict[str, float]]:
    """Time several functions round-robin (one call of each per round) so that drifts and
    contention on a shared machine hit every function alike. The callers have already made
    one untimed (warm-up) call of each. Rounds continue until ``min_rounds`` rounds
    (``slow_min_rounds`` when the slowest function takes more than ``slow_s``) are done and
    every function (except those in ``untargeted``) has ``target_s`` seconds of measurements,
    capped at ``max_rounds``.

    Returns per function ``summarize`` of the wall times (``time.perf_counter``) plus
    ``cpu_median``: the median process CPU time (``time.process_time``) of the same calls;
    with one thread, cpu/wall well below 1 means the process was waiting for a core."""
    ts: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    need = min_rounds
    for r in range(max_rounds):
        for k, fn in fns.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        targeted = [v for k, v in ts.items() if k not in untargeted]
        if r == 0 and max(v[0] for v in targeted) > slow_s:
            need = min(min_rounds, slow_min_rounds)
        if r + 1 >= need and all(sum(v) >= target_s for v in targeted):
            break
    out = {}
    for k, v in ts.items():
        out[k] = summarize(v)
        out[k]["cpu_median"] = float(np.median(cpu[k]))
    return out


def time_per_call(
    fn: Callable[[], Any], calls_per_block: int = 200, blocks: int = 7, warmup_blocks: int = 1
) -> dict[str, float]:
    """Per-call time of a cheap function: median over blocks of (block time / calls)."""

    def block() -> None:
        for _ in range(calls_per_block):
            fn()

    for _ in range(warmup_blocks):
        block()
    ts = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        block()
        ts.append((time.perf_counter() - t0) / calls_per_block)
    return summarize(ts)


# ---------------------------------------------------------------------------- vector fields
def make_mlp_weights(
    d: int, hidden: int, seed: int = 0, n_hidden_layers: int = 2, gain: float = 1.0
) -> list[np.ndarray]:
    """float32 weights ``[W1, b1, W2, b2, ...]`` of a tanh MLP d -> hidden -> ... -> d:
    ``U(-gain/sqrt(fan_in), gain/sqrt(fan_in))`` (gain 1 = torch's nn.Linear default).
    A gain of about 8 makes the flow stiff enough that adaptive solvers take tens of steps."""
    rng = np.random.default_rng(seed)
    dims = [d] + [hidden] * n_hidden_layers + [d]
    ws: list[np.ndarray] = []
    for i in range(len(dims) - 1):
        bound = gain / np.sqrt(dims[i])
        ws.append(rng.uniform(-bound, bound, size=(dims[i + 1], dims[i])).astype(np.float32))
        ws.append(rng.uniform(-bound, bound, size=(dims[i + 1],)).astype(np.float32))
    return ws


def torch_mlp(weights: list[np.ndarray], dtype: Any = None) -> Any:
    """``nn.Sequential`` tanh MLP ``y -> f(y)`` with the given weights (time independent)."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    for i in range(0, len(weights), 2):
        w, b = weights[i], weights[i + 1]
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i + 2 < len(weights):
            layers.append(nn.Tanh())
    net = nn.Sequential(*layers)
    return net if dtype is None else net.to(dtype)


def numpy_mlp(weights: list[np.ndarray], xp: Any = None) -> Callable[[Any], Any]:
    """float64 numpy version of the same MLP, ``y: (..., d)``; with ``xp`` (e.g.
    ``jax.numpy``) the same in that array module, on ``xp.asarray`` of the weights."""
    ws = [w.astype(np.float64) for w in weights] if xp is None else [xp.asarray(w) for w in weights]
    tanh = np.tanh if xp is None else xp.tanh
    n = len(ws) // 2

    def f(y: Any) -> Any:
        h = y
        for i in range(n):
            h = h @ ws[2 * i].T + ws[2 * i + 1]
            if i < n - 1:
                h = tanh(h)
        return h

    return f


def make_counting(net: Any) -> Any:
    """Wrap ``net(y)`` as a module ``f(t, y)`` that counts its calls (``.nfe``).

    It also exposes torchdiffeq's ``callback_step`` / ``callback_accept_step`` /
    ``callback_reject_step`` hooks, which count attempted / accepted / rejected steps there.
    """
    from torch import nn

    class CountingVF(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.reset()

        def forward(self, t: Any, y: Any) -> Any:
            self.nfe += 1
            return self.inner(y)

        def callback_step(self, t0: Any, y0: Any, dt: Any) -> None:
            self.n_steps += 1

        def callback_accept_step(self, t0: Any, y0: Any, dt: Any) -> None:
            self.n_accepted += 1

        def callback_reject_step(self, t0: Any, y0: Any, dt: Any) -> None:
            self.n_rejected += 1

        def reset(self) -> None:
            self.nfe = self.n_steps = self.n_accepted = self.n_rejected = 0

    return CountingVF(net)


# -------------------------------------------------------------------------------- reference
def scipy_reference(
    weights: list[np.ndarray],
    y0: np.ndarray,
    t: np.ndarray,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    cache: bool = True,
) -> np.ndarray:
    """Tight reference: scipy DOP853 in float64 on the whole batch. y0: (B, d) -> (T, B, d).

    With ``cache`` the result is stored in ``benchmarks/.refcache/`` under a hash of the
    weights, y0, t and tolerances (the d=32, B=256 reference takes several seconds)."""
    import hashlib

    h = hashlib.sha256()
    for a in [*weights, y0, t, np.array([rtol, atol])]:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    path = os.path.join(REF_CACHE_DIR, f"dop853-{h.hexdigest()[:20]}.npy")
    if cache and os.path.exists(path):
        return np.load(path)
    ref = _scipy_solve(weights, y0, t, rtol, atol)
    if cache:
        os.makedirs(REF_CACHE_DIR, exist_ok=True)
        ignore = os.path.join(REF_CACHE_DIR, ".gitignore")
        if not os.path.exists(ignore):
            with open(ignore, "w") as fh:
                fh.write("*\n")
        np.save(path, ref)
    return ref


def _scipy_solve(
    weights: list[np.ndarray], y0: np.ndarray, t: np.ndarray, rtol: float, atol: float
) -> np.ndarray:
    from scipy.integrate import solve_ivp

    f = numpy_mlp(weights)
    b, d = y0.shape

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        return f(y.reshape(b, d)).reshape(-1)

    sol = solve_ivp(
        rhs,
        (float(t[0]), float(t[-1])),
        y0.astype(np.float64).reshape(-1),
        method="DOP853",
        t_eval=t.astype(np.float64),
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"scipy reference failed: {sol.message}")
    return sol.y.T.reshape(len(t), b, d)


# ------------------------------------------------------------------------------ environment
def set_threads(n: int) -> None:
    """n >= 1: torch intra-op threads (default 1 for the benchmarks: on a small shared machine
    spinning OpenMP threads make timings erratic). n == 0 keeps torch's default."""
    if n <= 0:
        return
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)


def _git_rev() -> str | None:
    """Short HEAD commit, with '+dirty(src)<sha of the src diff>' when src/ has changes."""
    import hashlib

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=HERE).stdout

    try:
        rev = git("rev-parse", "--short", "HEAD").strip()
        if not rev:
            return None
        if git("status", "--porcelain", "--", ":/src").strip():
            diff = git("diff", "HEAD", "--", ":/src").encode()
            rev += f"+dirty(src {hashlib.sha256(diff).hexdigest()[:10]})"
        return rev
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "git": _git_rev(),
        "argv": sys.argv,
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    except ImportError:
        pass
    for mod in ("torch", "torchnde", "torchdiffeq", "torchode", "numpy", "scipy"):
        try:
            info[mod] = version(mod)
        except PackageNotFoundError:
            pass
    return info


# ----------------------------------------------------------------------------------- output
def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(name: str, payload: dict[str, Any], out: str | None = None) -> str:
    """Write ``payload`` to ``out`` or ``benchmarks/results/<name>-<stamp>.json``."""
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join(RESULTS_DIR, f"{name}-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(payload, fh, indent=1, default=_json_default)
    return out


def fmt(x: Any, kind: str = "g") -> str:
    """Format one table cell. kinds: s, g, ms (seconds -> ms), us (seconds -> µs), e, x."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and x != x:
        return "nan"
    if kind == "ms":
        return f"{x * 1e3:.2f}" if x * 1e3 < 100 else f"{x * 1e3:.1f}"
    if kind == "us":
        return f"{x * 1e6:.0f}"
    if kind == "e":
        return f"{x:.1e}"
    if kind == "x":
        return f"{x:.2f}"
    if kind == "1f":
        return f"{x:.1f}"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def markdown_table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> str:
    """cols: (key, header, kind). Returns a GitHub markdown table."""
    cells = [[fmt(r.get(k), kind) for k, _, kind in cols] for r in rows]
    heads = [h for _, h, _ in cols]
    widths = [max([len(heads[i])] + [len(c[i]) for c in cells]) for i in range(len(cols))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        lines.append("| " + " | ".join(s.rjust(w) for s, w in zip(c, widths)) + " |")
    return "\n".join(lines)


def med_range(xs: Sequence[float], kind: str = "x") -> str:
    """'median [min–max]' of the finite values, or '-'."""
    v = [x for x in xs if x is not None and x == x]
    if not v:
        return "-"
    return f"{fmt(statistics.median(v), kind)} [{fmt(min(v), kind)}–{fmt(max(v), kind)}]"


def parse_list(s: str, typ: Callable[[str], Any] = str) -> list[Any]:
    return [typ(x.strip()) for x in s.split(",") if x.strip()]


def base_parser(desc: str, default_libs: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=desc)
    p.add_argument("--libs", default=default_libs, help=f"comma-separated (default {default_libs})")
    p.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/<name>-<stamp>.json)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1; 0 keeps torch's default)",
    )
    return p


# ------------------------------------------------------------------- torchnde adjoints
# (name in the tables, attribute of torchnde, kind of the peers' counterpart)
TORCHNDE_ADJOINTS: list[tuple[str, str, str]] = [
    ("direct", "DirectAdjoint", "backprop"),
    ("backsolve", "BacksolveAdjoint", "adjoint"),
    ("interpolated", "InterpolatedAdjoint", "adjoint"),
    ("checkpoint", "CheckpointAdjoint", "checkpoint"),
]


def torchnde_adjoints(wanted: Sequence[str] | None = None) -> tuple[dict[str, type], list[str]]:
    """The adjoint classes torchnde has *now* (``getattr`` on the package), keyed by the short
    names of ``TORCHNDE_ADJOINTS``, and notes on the ones that are missing, so that the
    benchmarks pick up adjoints as they are added."""
    import torchnde

    have: dict[str, type] = {}
    notes: list[str] = []
    for name, attr, _ in TORCHNDE_ADJOINTS:
        if wanted is not None and name not in wanted:
            continue
        cls = getattr(torchnde, attr, None)
        if cls is None:
            notes.append(f"torchnde.{attr} does not exist (yet): torchnde/{name} skipped")
        else:
            have[name] = cls
    return have, notes


def make_torchnde_adjoint(
    name: str, cls: type, checkpoints: int | None = None, params: Sequence[Any] | None = None
) -> Any:
    """Instantiate an adjoint class with its defaults, except: ``checkpoints`` goes to
    CheckpointAdjoint when given, and ``params`` (the vector field's parameters, as
    torchdiffeq's ``adjoint_params``) to every adjoint whose constructor takes ``params``."""
    import inspect

    kw: dict[str, Any] = {}
    try:
        sig = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        sig = {}
    if name == "checkpoint" and checkpoints is not None:
        kw["checkpoints"] = checkpoints
    if params is not None and "params" in sig:
        kw["params"] = list(params)
    return cls(**kw)


# ------------------------------------------------------------- memory (Linux /proc, glibc)
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mib() -> float:
    """Resident set size of this process, MiB."""
    return _status_kb("VmRSS") / 1024.0


def hwm_mib() -> float:
    """Peak resident set size (VmHWM) of this process since start or the last reset, MiB."""
    return _status_kb("VmHWM") / 1024.0


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def malloc_release_mode(mmap_threshold: int = 65536, trim_threshold: int = 131072) -> bool:
    """Make glibc hand freed memory back to the OS promptly (fixed mmap threshold, low trim
    threshold), so that VmHWM - VmRSS measures the live memory of one step rather than
    memory parked in malloc arenas by earlier calls. Slows large allocations down a little."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1
        ok = libc.mallopt(-3, mmap_threshold) == 1 and libc.mallopt(-1, trim_threshold) == 1
        libc.malloc_trim(0)
        return bool(ok)
    except (OSError, AttributeError):
        return False


def measure_peak_rss(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` once and return the peak RSS increase over the RSS right before it (MiB),
    after gc + malloc_trim and a VmHWM reset; also the wall time of that call."""
    import gc

    gc.collect()
    malloc_trim()
    ok = reset_hwm()
    before = rss_mib()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    peak = hwm_mib()
    return {
        "rss_before_mib": before,
        "peak_mib": peak,
        "peak_increase_mib": peak - before if ok else float("nan"),
        "hwm_reset": ok,
        "measured_call_s": wall,
    }


def mem_available_mib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ------------------------------------------------------------------------------ subprocess
RESULT_PREFIX = "RESULT "


def run_child(script: str, cfg: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python script --child '<json cfg>'`` in a fresh interpreter and parse the last
    stdout line starting with ``RESULT `` as JSON (``{"error": ...}`` if there is none)."""
    cmd = [sys.executable, script, "--child", json.dumps(cfg)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s"}
    wall = time.perf_counter() - t0
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            res = json.loads(line[len(RESULT_PREFIX) :])
            res["child_wall_s"] = wall
            return res
    tail = (p.stderr or p.stdout)[-1500:]
    return {"error": f"child rc={p.returncode}: {tail}"}


def child_emit(res: dict[str, Any]) -> None:
    """Print a child's result as the ``RESULT <json>`` line that ``run_child`` reads."""
    print(RESULT_PREFIX + json.dumps(res, default=_json_default), flush=True)


def run_forked(
    fn: Callable[[dict[str, Any]], dict[str, Any]], cfg: dict[str, Any], timeout: float = 300.0
) -> dict[str, Any]:
    """Run ``fn(cfg)`` in a forked child process (its own address space, so its peak RSS
    cannot contaminate another configuration's) and return its result dict. Cheaper than
    ``run_child`` when the parent has already imported the heavy modules (torch): the caller
    must not have run any torch computation, so that no thread pool is forked."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def target() -> None:
        try:
            res = fn(cfg)
        except BaseException as e:  # report anything to the parent
            import traceback

            res = {"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1200:]}"}
        send.send(json.loads(json.dumps(res, default=_json_default)))

    t0 = time.perf_counter()
    p = ctx.Process(target=target)
    p.start()
    send.close()
    res: dict[str, Any]
    if recv.poll(timeout):
        try:
            res = recv.recv()
        except EOFError:
            res = {"error": "child died without a result"}
    else:
        res = {"error": f"timeout after {timeout}s"}
    p.join(10)
    if p.is_alive():
        p.kill()
        p.join()
    if p.exitcode not in (0, None) and "error" not in res:
        res["exitcode"] = p.exitcode
    if "error" in res and p.exitcode not in (0, None):
        res["error"] += f" (exit code {p.exitcode})"
    res["child_wall_s"] = time.perf_counter() - t0
    return res
