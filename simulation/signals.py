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


def ou_coefficients(
    dt_s: float, tau_s: np.ndarray | float, sigma: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Decay and innovation scale of an Ornstein-Uhlenbeck step of ``dt_s``, see :func:`ou_step`."""
    decay = np.exp(-dt_s / np.asarray(tau_s, dtype=np.float64))
    return decay, np.sqrt(1.0 - decay * decay) * sigma


def ou_step(
    state: np.ndarray,
    dt_s: float,
    tau_s: np.ndarray | float,
    sigma: np.ndarray | float,
    rng: np.random.Generator,
) -> None:
    """Advance an Ornstein-Uhlenbeck process (mean 0, stationary std ``sigma``) in place."""
    ou_advance(state, *ou_coefficients(dt_s, tau_s, sigma), rng)


def ou_advance(
    state: np.ndarray,
    decay: np.ndarray | float,
    kick: np.ndarray | float,
    rng: np.random.Generator,
) -> None:
    """:func:`ou_step` with its coefficients computed beforehand (:func:`ou_coefficients`)."""
    state *= decay
    state += kick * rng.standard_normal(state.shape[0])


def uniform(rng: np.random.Generator, low: float, high: float, count: int) -> np.ndarray:
    """Per-instance parameters drawn uniformly from a realistic range."""
    return rng.uniform(low, high, count)
