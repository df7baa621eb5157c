"""Multinomial bootstrap over the count table, replicates solved together per batch."""

from __future__ import annotations

import numpy as np
from scipy import linalg, sparse, special

from leaderboard.engine.likelihood import (
    RIDGE,
    Rows,
    centre,
    gram,
    group_pins,
    logits,
    successes,
    trials,
)
from leaderboard.engine.types import RatingOptions

_BOOT_BATCH = 50
_CHORD_STEPS = 10


def bootstrap_samples(
    theta: np.ndarray,
    rows: Rows,
    groups: np.ndarray,
    played: np.ndarray,
    anchor: int | None,
    options: RatingOptions,
) -> np.ndarray:
    """Centred (or anchored) beta for each replicate, shape (rounds, n_models).

    Each replicate resamples the whole count table from a multinomial with the table's total
    and the observed cell frequencies, i.e. battles drawn with replacement as FastChat and
    arena-rank do; counts are rounded to whole battles. Replicates start from the point
    estimate and are solved in batches (see ``_solve_batch``).
    """
    rng = np.random.default_rng(options.seed)
    flat = np.rint(rows.cells).ravel()
    total = int(flat.sum())
    probs = flat / max(total, 1)
    n = rows.n_models
    solver = _BatchSolver(theta, rows, groups)
    centred = centre(theta[:n], groups, played)
    out = np.empty((options.bootstrap_rounds, n))
    for start in range(0, options.bootstrap_rounds, _BOOT_BATCH):
        size = min(_BOOT_BATCH, options.bootstrap_rounds - start)
        cells = rng.multinomial(total, probs, size=size).astype(float)
        cells = cells.reshape(size, *rows.cells.shape).transpose(1, 2, 0)
        boot = solver.solve(successes(cells), trials(cells))
        for i in range(size):
            beta = centre(boot[:n, i], groups, played)
            if anchor is not None:
                # Re-pin to the point estimate's anchor value so the caller's offset applies.
                same = groups == groups[anchor]
                beta[same] += centred[anchor] - beta[anchor]
            out[start + i] = beta
    return out


class _BatchSolver:
    """Minimises the penalised objective for many count tables at once, from the point estimate.

    Replicates lie within O(1/sqrt(N)) of the point estimate, so the Hessian there, inverted
    once, gives chord steps that converge in a few iterations for all of them; a replicate that
    is still moving after ``_CHORD_STEPS`` (sparse or degenerate data) switches to its own
    Newton steps. Every step is safeguarded by an Armijo backtracking line search.
    """

    def __init__(self, theta: np.ndarray, rows: Rows, groups: np.ndarray):
        self.theta = theta
        self.rows = rows
        n, p = rows.n_models, rows.n_params
        self.incidence = sparse.csr_matrix(
            (
                np.r_[np.ones(len(rows.a)), -np.ones(len(rows.b))],
                (np.r_[np.arange(len(rows.a)), np.arange(len(rows.b))], np.r_[rows.a, rows.b]),
            ),
            shape=(len(rows.a), n),
        )
        prob = special.expit(logits(theta, rows))
        hessian = gram(rows, trials(rows.cells) * prob * (1 - prob))
        level = max(float(np.mean(np.diag(hessian))), 1.0)
        # The pins fix each group's common shift, a null direction the ridge barely bends.
        self.shift = level * group_pins(groups, p) + RIDGE * np.eye(p)
        self.chord = np.linalg.inv(hessian + self.shift)

    def solve(self, s: np.ndarray, m: np.ndarray, max_iter: int = 100, tol: float = 1e-7):
        """theta for each column of s, m (rows x batch)."""
        theta = np.repeat(self.theta[:, None], s.shape[1], axis=1)
        f, g, w = self._evaluate(theta, s, m)
        moving = np.ones(s.shape[1], dtype=bool)
        for iteration in range(max_iter):
            step = np.zeros_like(theta)
            if iteration < _CHORD_STEPS:
                step[:, moving] = -(self.chord @ g[:, moving])
            else:
                step[:, moving] = self._newton_steps(w[:, moving], g[:, moving])
            moving &= np.abs(step).max(axis=0) >= tol
            if not moving.any():
                return theta + step
            t = np.ones(s.shape[1])
            slope = np.sum(g * step, axis=0)
            for _ in range(40):
                f_new, g_new, w_new = self._evaluate(theta + t * step, s, m)
                # Armijo, with slack for rounding in f (a sum of ~N terms) once steps are tiny.
                bad = f_new > f + 1e-4 * t * slope + 1e-12 * np.abs(f)
                if not bad.any():
                    break
                t[bad] /= 2
            theta += t * step
            f, g, w = f_new, g_new, w_new
        return theta

    def _evaluate(self, theta: np.ndarray, s: np.ndarray, m: np.ndarray):
        n, x = self.rows.n_models, self.rows.x
        d = self.incidence @ theta[:n] + x @ theta[n:]
        f = np.sum(m * np.logaddexp(0.0, d) - s * d, axis=0)
        f += 0.5 * RIDGE * np.sum(theta**2, axis=0)
        prob = special.expit(d)
        resid = s - m * prob
        g = RIDGE * theta
        g[:n] -= self.incidence.T @ resid
        g[n:] -= x.T @ resid
        return f, g, m * prob * (1 - prob)

    def _newton_steps(self, w: np.ndarray, g: np.ndarray) -> np.ndarray:
        steps = []
        for j in range(w.shape[1]):
            hessian = gram(self.rows, w[:, j]) + self.shift
            factor = linalg.cho_factor(hessian, check_finite=False)
            steps.append(linalg.cho_solve(factor, -g[:, j], check_finite=False))
        return np.stack(steps, axis=1)
