"""Golden numbers for strix-tune's TPE, from Optuna itself.

1. Parzen estimator: Optuna's _ParzenEstimator over four observations of a mixed space, its
   log density at four points (the Rust test `parzen::tests::log_pdf_matches_optuna`).
2. Suggestions: after a fixed 40-trial history on a mixed space (float, log float, int, log int,
   categorical), TPESampler(seed=s) is asked for the next trial for seeds 0..2999, with
   multivariate=True (Optuna 5's default) and False; the mean and standard deviation of a few
   features of the suggestions are recorded (the Rust test
   `tpe::tests::suggestions_follow_optunas_distribution` compares strix-tune's means).

Writes testdata/optuna_suggestions.json:

    /tmp/optuna-venv/bin/python optuna_suggestions.py
"""

import json
import math
import pathlib

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

SEEDS = 3000
CHOICES = ["a", "b", "c"]
DISTS = {
    "x": FloatDistribution(-5, 10),
    "n": IntDistribution(1, 64, log=True),
    "c": CategoricalDistribution(CHOICES),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "k": IntDistribution(0, 6),
}


def objective(p: dict) -> float:
    return (
        p["x"] ** 2
        + (math.log2(p["n"]) - 3) ** 2
        + 2 * (p["c"] != "b")
        + (math.log10(p["lr"]) + 3) ** 2
        + abs(p["k"] - 4)
    )


def features(p: dict) -> list:
    """x, log2 n, [c == "a"], [c == "c"], log10 lr, k."""
    return [p["x"], math.log2(p["n"]), float(p["c"] == "a"), float(p["c"] == "c"), math.log10(p["lr"]), p["k"]]


def parzen() -> dict:
    """Optuna's Parzen estimator (TPESampler's default settings) on fixed observations."""
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
    from optuna.samplers._tpe.sampler import default_weights

    space = {
        "x1": FloatDistribution(-5, 10),
        "x2": FloatDistribution(0, 15),
        "n": IntDistribution(1, 20, log=True),
        "c": CategoricalDistribution(CHOICES),
    }
    # Internal representation: categoricals by index.
    obs = {"x1": [1.0, 3.0, -2.0, 7.5], "x2": [2.0, 14.0, 5.0, 6.0], "n": [1.0, 4.0, 20.0, 7.0], "c": [0.0, 2.0, 2.0, 1.0]}
    points = {"x1": [0.0, 3.1, 9.9, -4.0], "x2": [1.0, 13.0, 7.0, 0.5], "n": [1.0, 5.0, 19.0, 2.0], "c": [0.0, 1.0, 2.0, 2.0]}
    params = _ParzenEstimatorParameters(
        prior_weight=1.0, consider_magic_clip=True, consider_endpoints=False, weights=default_weights, multivariate=True
    )
    pe = _ParzenEstimator({k: np.asarray(v) for k, v in obs.items()}, space, params)
    log_pdf = pe.log_pdf({k: np.asarray(v) for k, v in points.items()})
    return {"observations": obs, "points": points, "log_pdf": log_pdf.tolist()}


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rs = np.random.RandomState(7)
    history = []
    for _ in range(40):
        p = {
            "x": float(rs.uniform(-5, 10)),
            "n": int(rs.randint(1, 65)),
            "c": CHOICES[rs.randint(3)],
            "lr": float(10 ** rs.uniform(-5, -1)),
            "k": int(rs.randint(0, 7)),
        }
        history.append({"params": p, "value": objective(p)})
    out = {"optuna_version": optuna.__version__, "parzen": parzen(), "seeds": SEEDS, "history": history}
    for multivariate in (True, False):
        rows = []
        for s in range(SEEDS):
            sampler = optuna.samplers.TPESampler(seed=s, multivariate=multivariate)
            study = optuna.create_study(sampler=sampler)
            for h in history:
                study.add_trial(optuna.trial.create_trial(params=h["params"], distributions=DISTS, value=h["value"]))
            rows.append(features(study.ask(DISTS).params))
        a = np.asarray(rows, dtype=float)
        key = "multivariate" if multivariate else "univariate"
        out[key] = {"mean": a.mean(0).tolist(), "sd": a.std(0).tolist()}
    path = pathlib.Path(__file__).parent / "testdata" / "optuna_suggestions.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
