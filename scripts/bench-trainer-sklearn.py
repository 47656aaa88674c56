#!/usr/bin/env python3
"""The scikit-learn side of scripts/bench-trainer.sh: trains the same family with the same
hyper-parameters on exactly the rows the Flywheel trainer trained on, scores the rows it held out
(read from its holdout.json), and prints one table row with both sides.

usage: bench-trainer-sklearn.py DATASET TARGET FAMILY TRAINER_OUTPUT_DIR THREADS
"""

import csv
import json
import math
import sys
import time
import warnings

import numpy as np
from sklearn import ensemble, linear_model, neural_network, svm, tree
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from threadpoolctl import threadpool_limits

# The trainer's missing-value spellings (trainer/src/data.rs).
MISSING = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"}


def load(path, target):
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        rows = [r for r in reader if r]
    t = header.index(target)
    y = np.array([r[t].strip() for r in rows], dtype=object)
    numeric, categorical, columns = [], [], []
    for i, name in enumerate(header):
        if i == t:
            continue
        cells = [r[i].strip() for r in rows]
        try:
            values = [math.nan if c in MISSING else float(c) for c in cells]
            numeric.append(len(columns))
            columns.append(np.array(values, dtype=np.float64))
        except ValueError:
            categorical.append(len(columns))
            columns.append(np.array(["__missing__" if c in MISSING else c for c in cells], dtype=object))
    x = np.empty((len(rows), len(columns)), dtype=object)
    for j, col in enumerate(columns):
        x[:, j] = col
    return x, y, numeric, categorical


def model_for(family, params, n_train, threads):
    p = params
    if family == "logistic":
        # Trainer: mean log loss + alpha/2 ||w||^2  ==  sklearn C = 1 / (alpha * n).
        return linear_model.LogisticRegression(C=1.0 / (p["alpha"] * n_train), max_iter=1000)
    if family == "svm":
        # Same objective as the trainer: squared hinge, C on the summed loss, intercept as a
        # regularised constant feature (intercept_scaling=1); dual="auto" picks its solver.
        return svm.LinearSVC(C=p["c"], max_iter=1000)
    if family == "decision_tree":
        return tree.DecisionTreeClassifier(max_depth=p["max_depth"], min_samples_leaf=p["min_samples_leaf"],
                                           random_state=0)
    if family == "random_forest":
        return ensemble.RandomForestClassifier(n_estimators=p["n_estimators"], max_depth=p["max_depth"],
                                               max_features=p["max_features"],
                                               min_samples_leaf=p["min_samples_leaf"], n_jobs=threads,
                                               random_state=0)
    if family == "gradient_boosting":
        # HistGradientBoosting's fixed min_hessian_to_split is 1e-3 = the trainer's min_child_weight.
        return ensemble.HistGradientBoostingClassifier(
            max_iter=p["n_estimators"], learning_rate=p["learning_rate"], max_leaf_nodes=p["max_leaves"],
            max_depth=p["max_depth"], l2_regularization=p["l2"], min_samples_leaf=20,
            early_stopping=False, random_state=0)
    if family == "mlp":
        activation = {"sigmoid": "logistic"}.get(p["activation"], p["activation"])
        return neural_network.MLPClassifier(
            hidden_layer_sizes=(p["hidden_units"],) * p["hidden_layers"], activation=activation,
            solver="adam", learning_rate_init=p["learning_rate"], batch_size=p["batch_size"],
            max_iter=p["epochs"], alpha=p["weight_decay"], tol=0.0, n_iter_no_change=10**9,
            random_state=0)
    raise SystemExit(f"unknown family {family}")


def main():
    dataset, target, family, out, threads = sys.argv[1:6]
    threads = int(threads)
    result = json.load(open(f"{out}/result.json"))
    card = json.load(open(f"{out}/model.json"))
    holdout = json.load(open(f"{out}/holdout.json"))
    x, y, numeric, categorical = load(dataset, target)
    # The trainer's exact split: its holdout rows validate, every other row with a target trains.
    valid = np.array(holdout["rows"])
    has_target = np.array([v not in MISSING for v in y])
    mask = has_target.copy()
    mask[valid] = False
    train = np.flatnonzero(mask)
    # Feature handling as the trainer: one-hot categories and standardised inputs for linear models
    # and the MLP, category codes for trees; median imputation for numbers.
    linear = family in ("logistic", "svm", "mlp")
    if linear:
        cat = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=2, max_categories=33)
        num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    else:
        cat = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        num = SimpleImputer(strategy="median")
    features = ColumnTransformer([("num", num, numeric), ("cat", cat, categorical)])
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        x_train = features.fit_transform(x[train])
        featurize = time.perf_counter() - started
        model = model_for(family, card["params"], len(train), threads)
        started = time.perf_counter()
        model.fit(x_train, y[train])
        fit = time.perf_counter() - started
        accuracy = accuracy_score(y[valid], model.predict(features.transform(x[valid])))
    ours = result["timings"]["train_seconds"]
    name = dataset.rsplit("/", 1)[-1].removesuffix(".csv")
    print(f"| {name} | {family} | {result['metrics']['accuracy']:.4f} | {accuracy:.4f} "
          f"| {ours:.2f} | {fit:.2f} | {ours / fit:.2f} |", flush=True)
    print(f"{name} {family}: sklearn featurise {featurize:.2f}s, {len(train)} train rows, "
          f"{len(valid)} holdout rows", file=sys.stderr)


if __name__ == "__main__":
    main()
