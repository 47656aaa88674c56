#!/usr/bin/env python3
"""Times Optuna's TPESampler on the histories the Rust TPE benchmark wrote.

Reads target/tpe-bench/history-<n>.json (written by `cargo bench -p flywheel-core --bench tpe`),
loads each history into an in-memory Optuna study with the same sampler settings, and times
`study.ask(distributions)`, which samples every parameter with TPE. Writes
{"<n>": {"median_us": ..., "repeats": ...}, "optuna": "<version>"} as JSON.

usage: bench-tpe-optuna.py OUT.json HISTORY.json...
"""

import json
import math
import statistics
import sys
import time
import warnings

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial


def distribution(domain):
    kind = domain["type"]
    if kind == "float":
        return FloatDistribution(domain["low"], domain["high"], log=domain["log"])
    if kind == "int":
        return IntDistribution(domain["low"], domain["high"], log=domain["log"])
    if kind == "categorical":
        return CategoricalDistribution(domain["choices"])
    raise ValueError(f"unknown domain type {kind!r}")


def time_history(path):
    with open(path) as f:
        history = json.load(f)
    distributions = {name: distribution(d) for name, d in history["space"].items()}
    gamma = history["gamma"]
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=history["startup_trials"],
        n_ei_candidates=history["candidates"],
        # Flywheel's gamma is a plain fraction of the completed trials.
        gamma=lambda n: min(math.ceil(gamma * n), n),
        seed=42,
    )
    study = optuna.create_study(direction=history["direction"], sampler=sampler)
    study.add_trials(
        create_trial(params=t["params"], distributions=distributions, value=t["value"])
        for t in history["trials"]
    )
    repeats = history["repeats"]
    samples = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        trial = study.ask(distributions)
        elapsed = time.perf_counter() - start
        # A failed trial is invisible to TPE, so every ask sees the same history.
        study.tell(trial, state=TrialState.FAIL)
        if i >= 3:
            samples.append(elapsed * 1e6)
    return len(history["trials"]), statistics.median(samples), repeats


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna 4.9 deprecated `gamma` (still honoured); the comparison needs it to match Flywheel's.
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    out = {"optuna": optuna.__version__}
    for path in sys.argv[2:]:
        n, median_us, repeats = time_history(path)
        out[str(n)] = {"median_us": median_us, "repeats": repeats}
        print(f"optuna {optuna.__version__}: history {n}: {median_us:.1f} µs per ask", file=sys.stderr)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
