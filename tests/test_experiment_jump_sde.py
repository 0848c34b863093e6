"""The jump-sde experiment's exact pieces: Ogata's thinning and the Hawkes log-likelihood."""

from __future__ import annotations

import math

import numpy as np

from torchnde.experiments.jump_sde import Config, hawkes_loglik, simulate_hawkes


def test_ogata_thinning_has_the_hawkes_mean_count():
    """E N(T) = mu T / (1 - a) - mu a / (b (1 - a)^2) (1 - exp(-b (1 - a) T)) from empty
    history; within 4 standard errors (the sample's)."""
    mu, a, b, T, n = 0.2, 0.8, 1.0, 20.0, 2000
    rng = np.random.default_rng(0)
    counts = np.array([len(simulate_hawkes(mu, a, b, T, rng)) for _ in range(n)], dtype=float)
    k = b * (1 - a)
    expect = mu * T / (1 - a) - mu * a / (b * (1 - a) ** 2) * (1 - math.exp(-k * T))
    se = counts.std(ddof=1) / math.sqrt(n)
    assert abs(counts.mean() - expect) < 4 * se, (counts.mean(), expect, se)


def test_the_hawkes_loglik_without_excitation_is_the_poisson_one():
    times = np.array([0.5, 1.5, 4.0])
    assert math.isclose(hawkes_loglik(times, 0.7, 0.0, 1.0, 5.0), 3 * math.log(0.7) - 3.5)


def test_the_hawkes_loglik_by_its_definition():
    mu, a, b, T = 0.3, 0.5, 2.0, 3.0
    times = np.array([0.4, 0.9, 2.2])
    lam = [mu + a * b * np.exp(-b * (t - times[times < t])).sum() for t in times]
    comp = mu * T + a * (1 - np.exp(-b * (T - times))).sum()
    assert math.isclose(hawkes_loglik(times, mu, a, b, T), float(np.log(lam).sum() - comp))


def test_full_sets_the_larger_run_except_where_given():
    cfg = Config(full=True, epochs=5)
    assert (cfg.num_train, cfg.t_end, cfg.epochs) == (1000, 100.0, 5)
