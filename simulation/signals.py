"""Reusable vectorised signal blocks: lags, noise processes, spikes."""

from __future__ import annotations

import numpy as np


def lag_gain(dt_s: float, tau_s: np.ndarray | float) -> np.ndarray | float:
    """Exact discrete gain of a first-order lag for a step ``dt_s``: ``1 - exp(-dt/tau)``."""
    return -np.expm1(-dt_s / np.asarray(tau_s, dtype=np.float64))


def first_order_lag(
    state: np.ndarray, target: np.ndarray | float, gain: np.ndarray | float
) -> None:
    """Move ``state`` toward ``target`` in place by ``gain`` (see :func:`lag_gain`)."""
    state += gain * (target - state)


def ou_step(
    state: np.ndarray,
    dt_s: float,
    tau_s: np.ndarray | float,
    sigma: np.ndarray | float,
    rng: np.random.Generator,
) -> None:
    """Advance an Ornstein-Uhlenbeck process (mean 0, stationary std ``sigma``) in place."""
    decay = np.exp(-dt_s / np.asarray(tau_s, dtype=np.float64))
    state *= decay
    state += np.sqrt(1.0 - decay * decay) * sigma * rng.standard_normal(state.shape[0])


def uniform(rng: np.random.Generator, low: float, high: float, count: int) -> np.ndarray:
    """Per-instance parameters drawn uniformly from a realistic range."""
    return rng.uniform(low, high, count)
