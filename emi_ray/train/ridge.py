"""Closed-form ridge regression for many penalties at once, and its K-fold choice of penalty.

The baseline every EMI paper quotes is ridge regression on mean-pooled features. With the
thin SVD of the centred design matrix, X = U S Vᵀ, the solution for any λ is
`V diag(s / (s² + λ)) Uᵀ y`: one SVD serves the whole λ grid, and because the SVD is thin
(rank ≤ min(N, D)) it costs the same as the dual (kernel) form when N < D. The intercept is
not penalised: X and y are centred on the training rows and the intercept restores the means.
Numpy only.
"""

from __future__ import annotations

import warnings

import numpy as np

from emi_ray.metrics import mean_pearson

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))


class RidgePath:
    """The SVD of one centred training matrix; `coef(λ)` and predictions for any λ from it."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        self.x_mean, self.y_mean = x.mean(axis=0), y.mean(axis=0)
        u, self.s, self.vt = np.linalg.svd(x - self.x_mean, full_matrices=False)
        self.uty = u.T @ (y - self.y_mean)  # (k, targets)

    def _shrunk(self, alpha: float) -> np.ndarray:
        s = self.s[:, None]
        return (s / (s * s + alpha)) * self.uty  # (k, targets)

    def coef(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(coef (D, targets), intercept (targets,)) for penalty `alpha`."""
        coef = self.vt.T @ self._shrunk(alpha)
        return coef, self.y_mean - self.x_mean @ coef

    def predict_many(self, x: np.ndarray, alphas: list[float]) -> np.ndarray:
        """(len(alphas), N, targets) predictions for new rows, one SVD projection for all λ."""
        proj = (np.asarray(x, np.float64) - self.x_mean) @ self.vt.T  # (N, k)
        return np.stack([proj @ self._shrunk(a) + self.y_mean for a in alphas])


def kfold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out row indices of each fold after a seeded shuffle."""
    return np.array_split(np.random.default_rng(seed).permutation(n), folds)


def cv_scores(x: np.ndarray, y: np.ndarray, alphas: list[float], folds: int, seed: int) -> np.ndarray:
    """Per λ: the mean over folds of the held-out mean Pearson r (over the targets)."""
    scores = np.zeros((folds, len(alphas)))
    for k, held in enumerate(kfold_indices(len(x), folds, seed)):
        keep = np.setdiff1d(np.arange(len(x)), held)
        preds = RidgePath(x[keep], y[keep]).predict_many(x[held], alphas)
        with warnings.catch_warnings():  # a constant column in a small fold scores 0; no need to shout
            warnings.simplefilter("ignore", RuntimeWarning)
            scores[k] = [mean_pearson(p, y[held])["mean_pearson"] for p in preds]
    return scores.mean(axis=0)


def choose_alpha(alphas: list[float], scores: np.ndarray) -> float:
    """The λ with the best score; ties go to the larger (more regularised) λ."""
    order = np.argsort(alphas)[::-1]
    return float(np.asarray(alphas)[order][int(np.argmax(np.asarray(scores)[order]))])
