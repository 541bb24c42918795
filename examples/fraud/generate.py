"""Synthetic credit-card-like transactions for the fraud example (29 features, float32).

Everything is generated from fixed seeds with numpy, so the example's models and data can be
rebuilt anywhere without downloading anything. The shape follows the public credit-card fraud
data the original notebooks used: 29 roughly standardized features (PCA-like components and a
scaled amount). Legitimate rows are correlated Gaussians; fraud moves a dozen features far
into the positive tail; drift shifts a few features of otherwise legitimate traffic.

Labelled sets give the ground truth the outcomes step of the demo sends back as feedback:
subtle frauds of varying strength get scores anywhere from 0 to 1, so the champion is unsure
of some (its estimated accuracy drops) and misses others outright (only labels show those).

Used by ``build_models.py``, the demo and the tests (load this file by path).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FRAUD_FEATURES",
    "N_FEATURES",
    "drifted_rows",
    "fraud_rows",
    "fraud_wave",
    "normal_rows",
    "reference_set",
    "subtle_fraud_rows",
    "training_set",
]

N_FEATURES = 29
#: Features that fraudulent transactions push upwards.
FRAUD_FEATURES = (1, 3, 5, 7, 8, 10, 16, 17, 18, 19, 20, 25, 26)
#: Features that the drift scenario shifts (a new merchant mix, say).
DRIFT_FEATURES = (0, 3, 6, 8, 9, 11, 21, 23, 24)


def _structure() -> tuple[np.ndarray, np.ndarray]:
    """The fixed correlation factor and fraud direction shared by every generator."""
    rng = np.random.default_rng(20220203)
    factor = np.eye(N_FEATURES) + 0.15 * rng.standard_normal((N_FEATURES, N_FEATURES))
    direction = np.zeros(N_FEATURES)
    direction[list(FRAUD_FEATURES)] = rng.uniform(2.0, 6.0, len(FRAUD_FEATURES))
    return factor, direction


_FACTOR, _FRAUD = _structure()


def normal_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` legitimate transactions."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, N_FEATURES)) @ _FACTOR.T).astype(np.float32)


def fraud_rows(n: int, seed: int = 0, strength: float = 2.0) -> np.ndarray:
    """``n`` blatant frauds (the champion scores them above 0.95)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, N_FEATURES)) @ _FACTOR.T
    return (base + strength * _FRAUD * rng.uniform(0.8, 1.2, (n, 1))).astype(np.float32)


def drifted_rows(n: int, shift: float = 3.0, seed: int = 0) -> np.ndarray:
    """``n`` legitimate transactions with ``shift`` standard deviations added to some features."""
    rows = normal_rows(n, seed).astype(np.float64)
    rows[:, list(DRIFT_FEATURES)] += shift
    return rows.astype(np.float32)


def training_set(
    n: int = 8000, fraud_share: float = 0.1, seed: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels to train on: fraud here is subtler than :func:`fraud_rows`."""
    rng = np.random.default_rng(seed)
    n_fraud = int(n * fraud_share)
    legit = normal_rows(n - n_fraud, seed + 1)
    fraud = fraud_rows(n_fraud, seed + 2, strength=0.3)
    x = np.vstack([legit, fraud])
    y = np.concatenate([np.zeros(len(legit), np.int64), np.ones(n_fraud, np.int64)])
    order = rng.permutation(len(y))
    return x[order], y[order]


def subtle_fraud_rows(n: int, seed: int = 0, low: float = 0.12, high: float = 0.3) -> np.ndarray:
    """``n`` frauds pushed ``low`` … ``high`` of the way :func:`fraud_rows` goes (uniformly)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, N_FEATURES)) @ _FACTOR.T
    return (base + rng.uniform(low, high, (n, 1)) * _FRAUD).astype(np.float32)


def _mix(legit: np.ndarray, fraud: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.vstack([legit, fraud])
    y = np.concatenate([np.zeros(len(legit), np.int64), np.ones(len(fraud), np.int64)])
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order], y[order]


def reference_set(
    n: int = 2000, fraud_share: float = 0.03, seed: int = 41
) -> tuple[np.ndarray, np.ndarray]:
    """A labelled sample of past traffic: legitimate rows and a few subtle frauds."""
    n_fraud = int(n * fraud_share)
    return _mix(normal_rows(n - n_fraud, seed), subtle_fraud_rows(n_fraud, seed + 1), seed + 2)


def fraud_wave(
    n: int, shift: float = -4.0, fraud_share: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Drifted legitimate traffic (as :func:`drifted_rows`) with a wave of subtle frauds."""
    n_fraud = int(n * fraud_share)
    legit = drifted_rows(n - n_fraud, shift, seed)
    return _mix(legit, subtle_fraud_rows(n_fraud, seed + 1), seed + 2)
