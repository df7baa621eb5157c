"""Rating engine benchmark against FastChat, arena-rank, evalica and choix.

Run from the repository root: ``python -m benchmarks.ratings [--quick] [--budget SECONDS]``.
Peers come from ``requirements-bench.txt``. Each measurement runs in its own subprocess so peak
memory is per method; a measurement over its time or memory budget is killed and reported as
skipped. See benchmarks/README.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ELO = 400 / math.log(10)
WINNERS = np.array(["model_a", "model_b", "tie", "tie (bothbad)"])
MEMORY_LIMIT_MB = 8_000


@dataclass(frozen=True)
class Case:
    name: str
    worker: str
    quick: bool = True


CASES = [
    Case("ours: aggregate battles to counts", "ours_aggregate"),
    Case("ours: fit (no CI)", "ours_fit"),
    Case("ours: fit + sandwich CI", "ours_sandwich"),
    Case("ours: fit + bootstrap 100", "ours_boot100"),
    Case("ours: fit + bootstrap 1000", "ours_boot1000"),
    Case("FastChat: compute_elo_mle_with_tie", "fastchat_mle", quick=False),
    Case("FastChat: get_bootstrap_result 100", "fastchat_boot100", quick=False),
    Case("arena-rank: aggregate (PairDataset)", "arena_aggregate"),
    Case("arena-rank: fit + sandwich CI", "arena_sandwich"),
    Case("arena-rank: fit + bootstrap 100", "arena_boot100", quick=False),
    Case("evalica: bradley_terry (weighted rows)", "evalica"),
    Case("choix: ilsr_pairwise_dense", "choix"),
]


def make_battles(n_models: int, n_battles: int, seed: int):
    """Zipf-ish model popularity, ~30% ties and ~3% both-bad, outcomes from true strengths."""
    rng = np.random.default_rng(seed)
    strength = rng.normal(0.0, 0.6, n_models)
    popularity = 1.0 / np.arange(1, n_models + 1) ** 0.8
    popularity /= popularity.sum()
    a = rng.choice(n_models, n_battles, p=popularity).astype(np.int32)
    b = rng.choice(n_models, n_battles, p=popularity).astype(np.int32)
    clash = a == b
    while clash.any():
        b[clash] = rng.choice(n_models, clash.sum(), p=popularity)
        clash = a == b
    p_a = 1.0 / (1.0 + np.exp(-(strength[a] - strength[b])))
    outcome = np.where(rng.random(n_battles) < p_a, 0, 1).astype(np.int8)
    u = rng.random(n_battles)
    outcome[u < 0.30] = 2
    outcome[u < 0.03] = 3
    return a, b, outcome


def aggregate(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, n_models: int):
    from leaderboard.engine import PairCounts

    key = (a.astype(np.int64) * n_models + b) * 4 + outcome
    table = np.bincount(key, minlength=n_models * n_models * 4).reshape(-1, 4)
    rows = np.flatnonzero(table.sum(axis=1))
    return PairCounts(rows // n_models, rows % n_models, *(table[rows, j] for j in range(4)))


def exact_mle(counts, n_models: int) -> np.ndarray:
    """Unpenalised Newton's method on the sum-zero subspace, to machine precision (Elo)."""
    a, b = counts.model_a, counts.model_b
    s = counts.wins_a + 0.5 * (counts.ties + counts.both_bad)
    m = counts.wins_a + counts.wins_b + counts.ties + counts.both_bad
    beta = np.zeros(n_models)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(beta[a] - beta[b])))
        r, w = s - m * p, m * p * (1 - p)
        g = np.bincount(a, r, n_models) - np.bincount(b, r, n_models)
        h = np.zeros((n_models, n_models))
        np.add.at(h, (a, b), -w)
        np.add.at(h, (b, a), -w)
        h[np.diag_indices(n_models)] = -h.sum(axis=1)
        step = np.linalg.lstsq(h + 1.0 / n_models, g, rcond=None)[0]
        beta += step - step.mean()
        if np.abs(step).max() < 1e-12:
            break
    return ELO * beta


def battles_frame(a, b, outcome):
    import pandas as pd

    names = np.array([f"m{i:03d}" for i in range(max(a.max(), b.max()) + 1)])
    return pd.DataFrame({"model_a": names[a], "model_b": names[b], "winner": WINNERS[outcome]})


def from_names(series_or_dict, n_models: int) -> np.ndarray:
    return np.array([float(series_or_dict[f"m{i:03d}"]) for i in range(n_models)])


def run_worker(worker: str, data: Path, n_models: int) -> dict:
    """Runs one measurement in this process; returns seconds, ratings and memory."""
    loaded = np.load(data)
    a, b, outcome = loaded["a"], loaded["b"], loaded["outcome"]
    prepare, run = WORKERS[worker](a, b, outcome, n_models)
    state = prepare()
    baseline = _rss_mb()
    start = time.perf_counter()
    ratings = run(state)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "peak_mb": peak,
        "delta_mb": max(peak - baseline, 0.0),
        "ratings": None if ratings is None else [float(x) for x in ratings],
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _ours(ci: str | None, rounds: int = 0):
    def factory(a, b, outcome, n_models):
        from leaderboard.engine import RatingOptions, fit

        def prepare():
            return aggregate(a, b, outcome, n_models)

        def run(counts):
            if ci is None:
                aggregate(a, b, outcome, n_models)
                return None
            options = RatingOptions(ci=ci, bootstrap_rounds=rounds)
            return fit(counts, n_models, options).ratings

        return prepare, run

    return factory


def _fastchat(rounds: int):
    def factory(a, b, outcome, n_models):
        def prepare():
            from fastchat.serve.monitor import elo_analysis

            return elo_analysis, battles_frame(a, b, outcome)

        def run(state):
            elo_analysis, frame = state
            if rounds == 0:
                return from_names(elo_analysis.compute_elo_mle_with_tie(frame), n_models)
            boot = elo_analysis.get_bootstrap_result(
                frame, elo_analysis.compute_elo_mle_with_tie, num_round=rounds
            )
            return from_names(boot.median(), n_models)

        return prepare, run

    return factory


def _arena(stage: str):
    def factory(a, b, outcome, n_models):
        def prepare():
            from arena_rank.models.bradley_terry import BradleyTerry
            from arena_rank.utils.data_utils import PairDataset

            frame = battles_frame(a, b, outcome)
            dataset = None if stage == "aggregate" else PairDataset.from_pandas(frame)
            return BradleyTerry, PairDataset, frame, dataset

        def run(state):
            bradley_terry, pair_dataset, frame, dataset = state
            if stage == "aggregate":
                pair_dataset.from_pandas(frame).counts.block_until_ready()
                return None
            model = bradley_terry(n_competitors=len(dataset.competitors))
            kwargs = {"ci_method": "bootstrap", "num_bootstrap": 100} if stage == "boot" else {}
            result = model.compute_ratings_and_cis(dataset, **kwargs)
            ratings = dict(zip(dataset.competitors, np.asarray(result["ratings"]), strict=True))
            return from_names(ratings, n_models)

        return prepare, run

    return factory


def _evalica(a, b, outcome, n_models):
    def prepare():
        import evalica
        import pandas as pd

        key = (a.astype(np.int64) * n_models + b) * 4 + outcome
        counts = np.bincount(key, minlength=n_models * n_models * 4)
        cells = np.flatnonzero(counts)
        pair, code = cells // 4, cells % 4
        codes = [evalica.Winner.X, evalica.Winner.Y, evalica.Winner.Draw, evalica.Winner.Draw]
        winners = [codes[c] for c in code.tolist()]
        xs, ys = (pair // n_models).tolist(), (pair % n_models).tolist()
        return evalica, pd.Index(range(n_models)), xs, ys, winners, counts[cells].astype(float)

    def run(state):
        evalica, index, xs, ys, winners, weights = state
        result = evalica.bradley_terry(xs, ys, winners, index=index, weights=weights.tolist())
        return ELO * np.log(result.scores.sort_index().to_numpy())

    return prepare, run


def _choix(a, b, outcome, n_models):
    def prepare():
        import choix

        return choix

    def run(choix):
        score = np.array([1.0, 0.0, 0.5, 0.5])[outcome]
        wins = np.zeros((n_models, n_models))
        np.add.at(wins, (a, b), score)
        np.add.at(wins, (b, a), 1.0 - score)
        return ELO * choix.ilsr_pairwise_dense(wins)

    return prepare, run


WORKERS = {
    "ours_aggregate": _ours(None),
    "ours_fit": _ours("none"),
    "ours_sandwich": _ours("sandwich"),
    "ours_boot100": _ours("bootstrap", 100),
    "ours_boot1000": _ours("bootstrap", 1000),
    "fastchat_mle": _fastchat(0),
    "fastchat_boot100": _fastchat(100),
    "arena_aggregate": _arena("aggregate"),
    "arena_sandwich": _arena("sandwich"),
    "arena_boot100": _arena("boot"),
    "evalica": _evalica,
    "choix": _choix,
}


def measure(worker: str, data: Path, n_models: int, budget: float) -> dict:
    """Run a worker subprocess under a wall-clock budget and a resident-memory cap."""
    cmd = [sys.executable, "-m", "benchmarks.ratings", "--worker", worker]
    cmd += ["--data", str(data), "--models", str(n_models)]
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # A session of its own, so a kill also reaches arena-rank's pool workers.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, cwd=root, env=env, start_new_session=True
        )
        start = time.monotonic()
        while proc.poll() is None:
            if time.monotonic() - start > budget:
                _kill(proc)
                return {"skipped": f"skipped: >{budget:.0f} s"}
            if _child_rss_mb(proc.pid) > MEMORY_LIMIT_MB:
                _kill(proc)
                return {"skipped": f"skipped: >{MEMORY_LIMIT_MB / 1000:.0f} GB RSS"}
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = err.read().decode().strip().splitlines()[-1:] or ["no output"]
            return {"skipped": f"failed: {tail[0][:60]}"}
        return json.loads(lines[-1])


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _child_rss_mb(pid: int) -> float:
    """RSS of the worker and its children (arena-rank's bootstrap forks a pool)."""
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            with open(f"/proc/{current}/task/{current}/children") as f:
                pids += [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 models x 1M only, fast peers")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.data, args.models)))
        return

    scales = [(100, 1_000_000)] if args.quick else [(100, 1_000_000), (200, 2_000_000)]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}; budget {args.budget:.0f} s")
    header = (
        f"{'scale':<12} {'method':<40} {'seconds':>9} {'peak MB':>8} {'+MB':>7} {'max|dElo|':>10}"
    )
    print(header)
    print("-" * len(header))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n_models, n_battles in scales:
            a, b, outcome = make_battles(n_models, n_battles, args.seed)
            data = Path(tmp) / f"battles-{n_models}.npz"
            np.savez(data, a=a, b=b, outcome=outcome)
            exact = exact_mle(aggregate(a, b, outcome, n_models), n_models)
            scale = f"{n_models}x{n_battles // 1_000_000}M"
            for case in CASES:
                if args.quick and not case.quick:
                    continue
                row = measure(case.worker, data, n_models, args.budget)
                results[(scale, case.worker)] = row
                print(_format_row(scale, case.name, row, exact), flush=True)
    _print_targets(results)
    print("load average at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


def _format_row(scale: str, name: str, row: dict, exact: np.ndarray) -> str:
    if "skipped" in row:
        return f"{scale:<12} {name:<40} {row['skipped']:>37}"
    drift = "-"
    if row["ratings"] is not None:
        ratings = np.array(row["ratings"])
        drift = f"{np.abs((ratings - ratings.mean()) - (exact - exact.mean())).max():.1e}"
    return (
        f"{scale:<12} {name:<40} {row['seconds']:>9.3f} {row['peak_mb']:>8.0f} "
        f"{row['delta_mb']:>7.0f} {drift:>10}"
    )


def _print_targets(results: dict) -> None:
    print("\ntargets at 100 models x 1M battles:")
    checks = [
        ("fit + sandwich < 0.5 s", "ours_sandwich", "seconds", 0.5),
        ("bootstrap 1000 < 5 s", "ours_boot1000", "seconds", 5.0),
        ("peak memory (bootstrap 1000) < 500 MB", "ours_boot1000", "peak_mb", 500.0),
    ]
    for label, worker, key, limit in checks:
        row = results.get(("100x1M", worker), {})
        value = row.get(key)
        verdict = "n/a" if value is None else ("met" if value < limit else "MISSED")
        shown = "-" if value is None else f"{value:.3f}"
        print(f"  {label:<40} {shown:>10}  {verdict}")


if __name__ == "__main__":
    main()
