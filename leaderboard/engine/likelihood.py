"""The penalised Bradley-Terry likelihood, its L-BFGS-B fit and the sandwich covariance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, sparse, special

from leaderboard.engine.types import PairCounts, StyleSums

RIDGE = 1e-6


@dataclass(frozen=True)
class StyleParts:
    """Per-row style statistics of the summed-features fit (see style_rows).

    ``xc``/``qc``: feature sums and outer-product sums per cell (A wins, B wins, half);
    ``r``: sum of (y - mean y) x; ``c``: the within-row scatter sum (x - xbar)(x - xbar)^T.
    """

    xc: np.ndarray
    qc: np.ndarray
    r: np.ndarray
    c: np.ndarray


@dataclass(frozen=True)
class Rows:
    """Fitting rows: cells are (A wins, B wins, half-win outcomes) per row.

    ``x`` holds each row's features (with summed style: the row's mean feature vector).
    """

    a: np.ndarray
    b: np.ndarray
    cells: np.ndarray
    x: np.ndarray
    n_models: int
    style: StyleParts | None = None

    @property
    def n_params(self) -> int:
        return self.n_models + self.x.shape[1]


def _cells(
    counts: PairCounts, n_models: int, both_bad_as_tie: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (model_a, model_b, cells) with cells (A wins, B wins, half-win outcomes)."""
    a = np.asarray(counts.model_a, dtype=np.int64)
    b = np.asarray(counts.model_b, dtype=np.int64)
    cols = [counts.wins_a, counts.wins_b, counts.ties, counts.both_bad]
    wa, wb, ties, both_bad = (np.asarray(c, dtype=float) for c in cols)
    if not all(len(c) == len(a) for c in (b, wa, wb, ties, both_bad)):
        raise ValueError("PairCounts columns must have the same length")
    if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_models):
        raise ValueError("model indices must lie in [0, n_models)")
    if np.any(a == b):
        raise ValueError("a model cannot battle itself")
    if len(a) and min(c.min() for c in (wa, wb, ties, both_bad)) < 0:
        raise ValueError("counts must be non-negative")
    half = ties + both_bad if both_bad_as_tie else ties
    return a, b, np.column_stack([wa, wb, half])


def fitting_rows(
    counts: PairCounts, n_models: int, both_bad_as_tie: bool, features: np.ndarray | None
) -> Rows:
    """Validate the counts and turn them into fitting rows (unordered pairs without features)."""
    a, b, cells = _cells(counts, n_models, both_bad_as_tie)
    if features is not None:
        x = np.asarray(features, dtype=float)
        x = x[:, None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[0] != len(a):
            raise ValueError("features must have one row per PairCounts row")
        keep = cells.sum(axis=1) > 0
        return Rows(a[keep], b[keep], cells[keep], x[keep], n_models)
    # Without features only the unordered pair matters: fold (b, a) rows into (a, b).
    swap = a > b
    lo, hi = np.where(swap, b, a), np.where(swap, a, b)
    cells[swap] = cells[swap][:, [1, 0, 2]]
    keys, inverse = np.unique(lo * n_models + hi, return_inverse=True)
    folded = np.column_stack([np.bincount(inverse, cells[:, j], len(keys)) for j in range(3)])
    keep = folded.sum(axis=1) > 0
    return Rows(
        keys[keep] // n_models,
        keys[keep] % n_models,
        folded[keep],
        np.zeros((keep.sum(), 0)),
        n_models,
    )


def style_rows(counts: PairCounts, sums: StyleSums, n_models: int, both_bad_as_tie: bool) -> Rows:
    """Fitting rows for style control from per-row feature sums (rows stay as voted).

    Each vote's log-likelihood l(d + g.x_i) is expanded to second order around its row's
    mean style term g.xbar (the row's votes share d = beta_a - beta_b):
        sum_i l_i ~ l_row(d + g.xbar) + g.R - 1/2 p(1 - p) g^T C g,
    with R = sum (y_i - ybar) x_i and C = sum (x_i - xbar)(x_i - xbar)^T. Exact when the
    features are constant within a row; otherwise the error is third order in the spread of
    g.x within a row. Features are divided by their root mean square over the fitted votes,
    so the coefficients are per typical difference.
    """
    a, b, cells = _cells(counts, n_models, both_bad_as_tie)
    keep = trials(cells) > 0
    a, b, cells = a[keep], b[keep], cells[keep]
    x = np.asarray(sums.x, dtype=float)
    xx = np.asarray(sums.xx, dtype=float)
    k = x.shape[-1]
    if x.shape != (len(keep), 4, k) or xx.shape != (len(keep), 4, k, k):
        raise ValueError("style sums must have shapes (rows, 4, k) and (rows, 4, k, k)")
    half = [2, 3] if both_bad_as_tie else [2]
    xc = np.stack([x[:, 0], x[:, 1], x[:, half].sum(axis=1)], axis=1)
    qc = np.stack([xx[:, 0], xx[:, 1], xx[:, half].sum(axis=1)], axis=1)
    xc, qc = xc[keep], qc[keep]
    m = trials(cells)
    total_q = qc.sum(axis=(0, 1))
    rms = np.sqrt(np.diag(total_q) / max(float(m.sum()), 1.0))
    # A feature that is always zero carries no information; leave it at zero.
    scale = np.where(rms > 1e-9, rms, 1.0)
    xc = xc / scale
    qc = qc / np.outer(scale, scale)
    sx = xc.sum(axis=1)
    xbar = sx / m[:, None]
    sy = xc[:, 0] + 0.5 * xc[:, 2]
    r = sy - successes(cells)[:, None] * xbar
    c = qc.sum(axis=1) - sx[:, :, None] * xbar[:, None, :]
    return Rows(a, b, cells, xbar, n_models, StyleParts(xc, qc, r, c))


def successes(cells: np.ndarray) -> np.ndarray:
    """A wins plus half the half-win outcomes; cells are (rows, 3) or (rows, 3, batch)."""
    return cells[:, 0] + 0.5 * cells[:, 2]


def trials(cells: np.ndarray) -> np.ndarray:
    return cells.sum(axis=1)


def logits(theta: np.ndarray, rows: Rows) -> np.ndarray:
    d = theta[rows.a] - theta[rows.b]
    if rows.x.shape[1]:
        d = d + rows.x @ theta[rows.n_models :]
    return d


def objective(theta: np.ndarray, rows: Rows, s: np.ndarray, m: np.ndarray):
    """Penalised negative log-likelihood and its analytic gradient."""
    n = rows.n_models
    d = logits(theta, rows)
    f = np.sum(m * np.logaddexp(0.0, d) - s * d) + 0.5 * RIDGE * theta @ theta
    p = special.expit(d)
    resid = s - m * p
    g = RIDGE * theta
    if rows.style is not None:
        gamma = theta[n:]
        v = p * (1 - p)
        cg = rows.style.c @ gamma
        q = cg @ gamma
        f += -np.sum(rows.style.r @ gamma) + 0.5 * np.sum(v * q)
        resid = resid - 0.5 * v * (1 - 2 * p) * q
        g[n:] += -rows.style.r.sum(axis=0) + v @ cg
    g[:n] -= np.bincount(rows.a, resid, n) - np.bincount(rows.b, resid, n)
    if rows.x.shape[1]:
        g[n:] -= rows.x.T @ resid
    return f, g


def fit_theta(rows: Rows, s: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, int, float]:
    """L-BFGS-B in Jacobi-preconditioned coordinates (z = sqrt(diag H(0)) * theta)."""
    n = rows.n_models
    if not len(rows.a):
        return np.zeros(rows.n_params), 0, 0.0
    diag = np.full(rows.n_params, RIDGE)
    diag[:n] += np.bincount(rows.a, m / 4, n) + np.bincount(rows.b, m / 4, n)
    diag[n:] += (rows.x**2).T @ m / 4
    if rows.style is not None:
        diag[n:] += np.einsum("rjj->j", rows.style.c) / 4
    root = np.sqrt(diag)

    def fun(z):
        f, g = objective(z / root, rows, s, m)
        return f, g / root

    res = optimize.minimize(
        fun,
        np.zeros(rows.n_params),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 20_000, "maxcor": 20, "gtol": 1e-10, "ftol": 1e-15},
    )
    theta = res.x / root
    grad_norm = float(np.abs(objective(theta, rows, s, m)[1]).max(initial=0.0))
    return theta, int(res.nit), grad_norm


def connected_groups(rows: Rows, played: np.ndarray) -> np.ndarray:
    """Connected-component label per model (-1 for models without battles)."""
    n = rows.n_models
    graph = sparse.coo_matrix((np.ones(len(rows.a)), (rows.a, rows.b)), shape=(n, n))
    _, labels = sparse.csgraph.connected_components(graph, directed=False)
    return np.where(played, labels, -1)


def centre(beta: np.ndarray, groups: np.ndarray, played: np.ndarray) -> np.ndarray:
    """Shift each connected group to mean zero (the ridge nearly does; make it exact)."""
    beta = np.where(played, beta, 0.0)
    if not played.any():
        return beta
    labels = np.where(played, groups, 0)
    sums = np.bincount(labels, beta, labels.max() + 1)
    sizes = np.bincount(labels, played.astype(float), labels.max() + 1)
    return np.where(played, beta - (sums / np.maximum(sizes, 1))[labels], 0.0)


def group_pins(groups: np.ndarray, n_params: int) -> np.ndarray:
    """sum over connected groups of v v^T / |group|: fixes each group's free common shift."""
    pins = np.zeros((n_params, n_params))
    for g in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == g)
        pins[np.ix_(members, members)] += 1.0 / len(members)
    return pins


def gram(rows: Rows, w: np.ndarray) -> np.ndarray:
    """sum_r w_r z_r z_r^T with z_r = (e_a - e_b, x_r): the shape of H and of the meat."""
    return gram_parts(rows, w, w[:, None] * rows.x, rows.x.T @ (w[:, None] * rows.x))


def gram_parts(rows: Rows, w: np.ndarray, wx: np.ndarray, wxx: np.ndarray) -> np.ndarray:
    """The matrix with model block sum_r w_r (e_a - e_b)(e_a - e_b)^T, model-feature block
    sum_r (e_a - e_b) wx_r^T and feature block wxx (given summed)."""
    n, p = rows.n_models, rows.n_params
    a, b = rows.a, rows.b
    flat = (
        np.bincount(a * p + a, w, p * p)
        + np.bincount(b * p + b, w, p * p)
        - np.bincount(a * p + b, w, p * p)
        - np.bincount(b * p + a, w, p * p)
    )
    out = flat.reshape(p, p)
    for j in range(p - n):
        col = np.bincount(a, wx[:, j], n) - np.bincount(b, wx[:, j], n)
        out[:n, n + j] = col
        out[n + j, :n] = col
    out[n:, n:] = wxx
    return out


def sandwich_variance(
    theta: np.ndarray, rows: Rows, groups: np.ndarray, anchor: int | None
) -> np.ndarray:
    """Per-model variance of beta from H^-1 G H^-1, G summing per-battle score outer products.

    The per-battle scores are (y - p) z_r with y in {1, 0, 1/2}, so G follows in closed form
    from the cell counts. Each connected group's common shift (a null direction of both H and
    G) is pinned by adding a rank-one term to H, which gives the pseudo-inverse on the
    sum-zero subspace of that group.
    """
    n = rows.n_models
    p_win = special.expit(logits(theta, rows))
    m = trials(rows.cells)
    # Squared residual of each cell's votes: A wins (y = 1), B wins (0), half wins (1/2).
    sq = np.column_stack([(1 - p_win) ** 2, p_win**2, (0.5 - p_win) ** 2])
    if rows.style is None:
        hessian = gram(rows, m * p_win * (1 - p_win))
        meat = gram(rows, np.sum(rows.cells * sq, axis=1))
    else:
        # Summed style: the information and the score products from each cell's feature sums
        # (the row's probability stands in for each vote's; see style_rows).
        v = p_win * (1 - p_win)
        xc, qc = rows.style.xc, rows.style.qc
        hessian = gram_parts(
            rows, m * v, v[:, None] * xc.sum(axis=1), np.einsum("r,rcjk->jk", v, qc)
        )
        meat = gram_parts(
            rows,
            np.sum(rows.cells * sq, axis=1),
            np.einsum("rc,rcj->rj", sq, xc),
            np.einsum("rc,rcjk->jk", sq, qc),
        )
    hessian[np.diag_indices(rows.n_params)] += RIDGE
    hessian += max(float(np.mean(np.diag(hessian))), 1.0) * group_pins(groups, rows.n_params)
    h_inv = np.linalg.inv(hessian)
    cov = (h_inv @ meat @ h_inv)[:n, :n]
    var = np.diag(cov).copy()
    if anchor is not None:
        same = groups == groups[anchor]
        var[same] = var[same] + cov[anchor, anchor] - 2 * cov[same, anchor]
    return np.clip(var, 0.0, None)
