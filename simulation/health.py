"""Hidden health: a C-MAPSS-style degradation law driven by each instance's usage clock.

Every instance carries a usage clock ``u`` (equivalent running seconds at its nominal duty;
the models advance it faster under heavier use and under faults) and a life ``L`` (the usage
at which it fails). Health follows the law of the C-MAPSS turbofan simulations (Saxena et al.,
2008), ``h = 1 - d - (exp(a u^b) - 1)``, written with the ``- 1`` so that ``h(0) = 1 - d``:
``d`` is the initial wear, ``b`` the shape, and ``a = ln(2 - d) / L^b`` so that ``h`` reaches 0
exactly when ``u = L``. Health falls slowly at first and faster and faster towards the end.
"""

from __future__ import annotations

import numpy as np

INITIAL_WEAR = (0.0, 0.01)  # d: a new part's health is 0.99 to 1 (MODELLING.md)
SHAPE_EXPONENT = (1.4, 1.6)  # b (MODELLING.md, C-MAPSS)


class Degradation:
    """Usage clocks, lives and health of all instances of one model, as arrays.

    ``life_s`` is each instance's life in usage seconds. With ``wear=False`` the instances are
    as new and stay so (``d = 0``; the model does not advance the clocks), so health is exactly 1.
    """

    def __init__(self, life_s: np.ndarray, rng: np.random.Generator, *, wear: bool) -> None:
        count = life_s.shape[0]
        self.rng = rng
        self.wear = wear
        self.usage_s = np.zeros(count)
        self.life_s = life_s.astype(np.float64)
        self.initial_wear = np.zeros(count)
        self.exponent = np.asarray(rng.uniform(*SHAPE_EXPONENT, count))
        if wear:
            self.initial_wear = np.asarray(rng.uniform(*INITIAL_WEAR, count))
        self._log_span = np.log(2.0 - self.initial_wear)  # ln(2 - d)

    def health(self, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Health of instances ``idx`` (all by default), 0..1, as a new array."""
        x = self.usage_s[idx] / self.life_s[idx]
        np.minimum(x, 1.0, out=x)
        np.power(x, self.exponent[idx], out=x)
        x *= self._log_span[idx]
        np.exp(x, out=x)  # (2 - d) ** ((u / L) ** b)
        health = 2.0 - self.initial_wear[idx]
        health -= x
        np.clip(health, 0.0, 1.0, out=health)
        return health

    def remaining_s(self, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Usage seconds left until health reaches 0, as a new array (never negative)."""
        remaining = self.life_s[idx] - self.usage_s[idx]
        np.maximum(remaining, 0.0, out=remaining)
        return remaining

    def renew(self, idx: np.ndarray, life_s: np.ndarray) -> None:
        """Replace the worn part of instances ``idx`` with a new one of life ``life_s``."""
        self.usage_s[idx] = 0.0
        self.life_s[idx] = life_s
        self.exponent[idx] = self.rng.uniform(*SHAPE_EXPONENT, idx.size)
        if self.wear:
            self.initial_wear[idx] = self.rng.uniform(*INITIAL_WEAR, idx.size)
            self._log_span[idx] = np.log(2.0 - self.initial_wear[idx])
