"""Reference numbers for strix-tune's samplers, from Optuna itself.

Runs Optuna's TPESampler (its defaults, seed s) and RandomSampler (seed s) for 50 trials on
Branin (x1 in [-5, 10], x2 in [0, 15]) and the 5-D sphere (each x in [-5, 5]) for seeds 0..9,
and prints {function: {"tpe": [best per seed], "random": [best per seed]}} as JSON.

    python3 -m venv /tmp/optuna-venv && /tmp/optuna-venv/bin/pip install optuna
    /tmp/optuna-venv/bin/python optuna_reference.py            # Optuna's defaults
    /tmp/optuna-venv/bin/python optuna_reference.py --univariate  # TPESampler(multivariate=False)
    /tmp/optuna-venv/bin/python optuna_reference.py --seeds 100   # seeds 0..99

A median over 10 seeds is noisy: over 100 or 300 seeds Optuna 5.1's TPE median on Branin is
0.571 (its seeds 0..9 give 0.465), so compare samplers on many seeds where it matters.

Optuna 5 made the multivariate TPE the default for a single objective; `--univariate` gives the
independent TPE of Optuna 4 for comparison with strix-tune's `multivariate: false`.
"""

import argparse
import json
import math
import sys

import optuna

N_TRIALS = 50


def branin(trial: optuna.Trial) -> float:
    x1 = trial.suggest_float("x1", -5.0, 10.0)
    x2 = trial.suggest_float("x2", 0.0, 15.0)
    b = 5.1 / (4.0 * math.pi**2)
    c = 5.0 / math.pi
    t = 1.0 / (8.0 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * math.cos(x1) + 10.0


def sphere(trial: optuna.Trial) -> float:
    return sum(trial.suggest_float(f"x{i}", -5.0, 5.0) ** 2 for i in range(5))


def best(objective, sampler: optuna.samplers.BaseSampler) -> float:
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(objective, n_trials=N_TRIALS)
    return study.best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--univariate", action="store_true", help="TPESampler(multivariate=False)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    args = parser.parse_args()
    seeds = range(args.seeds)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe_kwargs = {"multivariate": False} if args.univariate else {}
    out = {}
    for name, objective in (("branin", branin), ("sphere5", sphere)):
        out[name] = {
            "tpe": [best(objective, optuna.samplers.TPESampler(seed=s, **tpe_kwargs)) for s in seeds],
            "random": [best(objective, optuna.samplers.RandomSampler(seed=s)) for s in seeds],
        }
    # The version goes to stderr so stdout stays {function: {...}} for the test that reads it.
    print(f"optuna {optuna.__version__}", file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
