#!/usr/bin/env python3
"""A custom Flywheel trial: scikit-learn trains, skl2onnx exports, and the process speaks the
trial protocol (docs/trial-protocol.md) exactly like the built-in trainer:

- configuration from flags or FLYWHEEL_* environment variables,
- `{"flywheel":"report",...}` lines on stdout while training (logs go to stderr),
- model.onnx (one [N, 1] input per raw column; outputs label/probabilities or variable),
  model.json (a model card) and result.json in --output, the result copied to the termination log,
- exit 0 on success, 2 when the input is at fault, 3 otherwise.

Deliberately small: numeric columns and string categories (as ordinal codes), a holdout split,
one of six families. Copy it and swap in your own model.
"""

import argparse
import csv
import datetime
import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import time
import warnings

SUCCESS, BAD_INPUT, INTERNAL = 0, 2, 3
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096
MISSING = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"}
TRAINER_VERSION = "custom-trial-sklearn/0.1"
# Probabilities (and regression values, relative) must agree with ONNX Runtime this closely.
PARITY_TOLERANCE = 1e-4
LATENCY_SAMPLES = 200

# Catalogue defaults (docs/search-space.md); a parameter outside this list is bad input.
DEFAULTS = {
    "logistic": {"penalty": "l2", "alpha": 0.0001},
    "linear": {"penalty": "l2", "alpha": 0.0001},
    "decision_tree": {"max_depth": 12, "min_samples_leaf": 1},
    "random_forest": {"n_estimators": 100, "max_depth": 32, "max_features": 0.5, "min_samples_leaf": 1},
    "gradient_boosting": {
        "n_estimators": 100, "learning_rate": 0.1, "max_leaves": 31, "max_depth": 8,
        "min_child_weight": 0.001, "subsample": 1.0, "l2": 0.0,
    },
    "mlp": {
        "hidden_layers": 1, "hidden_units": 100, "activation": "relu", "learning_rate": 0.001,
        "batch_size": 200, "epochs": 50, "weight_decay": 0.0001,
    },
}
# The parameter that --budget caps.
RESOURCE = {"random_forest": "n_estimators", "gradient_boosting": "n_estimators", "mlp": "epochs"}


class BadInput(Exception):
    """The dataset, target or parameters are unusable: exit 2, reason BadInput."""


class ParityMismatch(Exception):
    """The exported model disagrees with scikit-learn: exit 3, reason ParityMismatch."""


def log(message):
    print(message, file=sys.stderr, flush=True)


def report(step, metrics):
    line = json.dumps({"flywheel": "report", "step": int(step), "metrics": metrics})
    print(line, flush=True)


def env(name, default=None):
    return os.environ.get("FLYWHEEL_" + name, default)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=env("DATASET"), required=env("DATASET") is None)
    p.add_argument("--target", default=env("TARGET"), required=env("TARGET") is None)
    p.add_argument("--task", default=env("TASK", "auto"),
                   choices=["auto", "binary", "multiclass", "regression"])
    p.add_argument("--metric", default=env("METRIC"))
    p.add_argument("--family", default=env("FAMILY"), required=env("FAMILY") is None)
    p.add_argument("--params", default=env("PARAMS", "{}"))
    p.add_argument("--seed", type=int, default=env("SEED", "0"))
    p.add_argument("--budget", type=int, default=env("BUDGET"))
    p.add_argument("--output", default=env("OUTPUT"), required=env("OUTPUT") is None)
    p.add_argument("--threads", type=int, default=env("THREADS", "1"))
    p.add_argument("--study", default=env("STUDY"))
    p.add_argument("--trial", default=env("TRIAL"))
    p.add_argument("--holdout", type=float, default=env("HOLDOUT", "0.2"))
    # Unknown flags from a newer runner are ignored, as the protocol allows.
    args, unknown = p.parse_known_args(argv)
    if unknown:
        log(f"ignoring unknown arguments: {unknown}")
    return args


# ---------------------------------------------------------------------------------------------
# Data


def fetch(uri):
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if "://" in path:
        raise BadInput(f"dataset {uri!r}: only local files (file:// or a path) are supported")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadInput(f"cannot read the dataset {uri!r}: {e.strerror}") from e
    return "file://" + os.path.abspath(path), data


def parse_csv(data):
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInput(f"the dataset is not valid UTF-8: {e}") from e
    if not text.strip():
        raise BadInput("dataset is empty")
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader)]
    rows = []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise BadInput(f"ragged row on line {reader.line_num}: it has {len(row)} fields "
                           f"but the header has {len(header)}")
        rows.append([None if c.strip() in MISSING else c for c in row])
    if not rows:
        raise BadInput("dataset has a header but no data rows")
    return header, rows


def number(cell):
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def infer(header, rows, target, task):
    """Typed feature columns and the target, for rows that have a target."""
    if target not in header:
        raise BadInput(f"target column {target!r} not found; the columns are: {', '.join(header)}")
    t = header.index(target)
    rows = [r for r in rows if r[t] is not None]
    if not rows:
        raise BadInput(f"target column {target!r} has no values: every cell is missing")
    labels = [r[t] for r in rows]
    numbers = [number(v) for v in labels]
    numeric_target = all(v is not None for v in numbers)
    if task == "auto":
        few = len(set(labels)) <= 20 and (not numeric_target or all(v == int(v) for v in numbers))
        task = "regression" if numeric_target and not few else "classification"
    if task == "regression":
        if not numeric_target:
            raise BadInput(f"target column {target!r} is not numeric, so it cannot be regressed")
        y, classes = numbers, []
    else:
        key = (lambda v: float(v)) if numeric_target else (lambda v: v)
        classes = sorted(set(labels), key=key)
        if len(classes) < 2:
            raise BadInput(f"target column {target!r} has one class only: {classes[0]!r}")
        if task == "binary" and len(classes) != 2:
            raise BadInput(f"task binary but the target has {len(classes)} classes")
        task = "binary" if len(classes) == 2 else "multiclass"
        index = {c: i for i, c in enumerate(classes)}
        y = [index[v] for v in labels]

    columns = []
    used = set()
    for i, name in enumerate(header):
        if i == t:
            continue
        cells = [r[i] for r in rows]
        present = [c for c in cells if c is not None]
        if len(set(present)) <= 1:
            log(f"dropping column {name!r}: constant or empty")
            continue
        values = [number(c) for c in present]
        if all(v is not None for v in values):
            kind = "numeric"
        else:
            kind = "categorical"
            if len(set(present)) > max(20, len(present) // 2):
                log(f"dropping column {name!r}: nearly every value is distinct (identifier or text)")
                continue
        safe = re.sub(r"[^A-Za-z0-9_]", "_", name) or "column"
        while safe in used:
            safe += "_"
        used.add(safe)
        columns.append({"name": name, "input": safe, "kind": kind, "cells": cells,
                        "nullable": len(present) < len(cells)})
    if not columns:
        raise BadInput("no usable feature columns: every column other than the target was dropped")
    return task, classes, y, columns, len(rows)


def holdout(y, classification, fraction, seed):
    import numpy as np

    if not 0.0 < fraction < 1.0:
        raise BadInput(f"--holdout must lie strictly between 0 and 1, got {fraction}")
    n = len(y)
    if n < 4:
        raise BadInput(f"dataset has {n} rows with a target: too few to train and validate")
    rng = np.random.default_rng(seed)
    groups = {}
    for row, label in enumerate(y if classification else [0] * n):
        groups.setdefault(label, []).append(row)
    train, valid = [], []
    for _, group in sorted(groups.items()):
        group = list(rng.permutation(group))
        take = min(max(round(len(group) * fraction), 1), len(group) - 1) if len(group) > 1 else 0
        valid += group[:take]
        train += group[take:]
    return sorted(train), sorted(valid)


def encode(columns, train):
    """Float matrix columns: numbers as-is (NaN missing), categories as codes learnt on the
    training rows (-1 for missing or unseen, as the ONNX LabelEncoder's default)."""
    import numpy as np

    matrix = []
    for c in columns:
        if c["kind"] == "numeric":
            matrix.append([math.nan if v is None else float(v) for v in c["cells"]])
        else:
            levels = sorted({c["cells"][r] for r in train if c["cells"][r] is not None})
            c["levels"] = levels
            code = {level: float(i) for i, level in enumerate(levels)}
            matrix.append([code.get(v, -1.0) if v is not None else -1.0 for v in c["cells"]])
    return np.asarray(matrix, dtype=np.float32).T


# ---------------------------------------------------------------------------------------------
# Training


def resolve_params(family, text, budget):
    if family not in DEFAULTS:
        known = ", ".join(sorted(DEFAULTS))
        raise BadInput(f"unknown family {family!r} (this trial trains: {known})")
    try:
        given = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"--params is not JSON: {e}") from e
    if not isinstance(given, dict):
        raise BadInput("--params must be a JSON object")
    params = dict(DEFAULTS[family])
    for name, value in given.items():
        if name not in params:
            raise BadInput(f"unknown parameter {name!r} for family {family} "
                           f"(known: {', '.join(params)})")
        if isinstance(params[name], str) != isinstance(value, str) or isinstance(value, bool):
            raise BadInput(f"parameter {name!r} has the wrong type: {value!r}")
        params[name] = type(params[name])(value) if not isinstance(params[name], str) else value
    if budget is not None and family in RESOURCE:
        if budget < 1:
            raise BadInput("--budget must be at least 1")
        params[RESOURCE[family]] = min(params[RESOURCE[family]], budget)
    return params


def metrics_for(task, y_true, output, n_classes):
    import numpy as np
    from sklearn import metrics as m

    if task == "regression":
        return {
            "rmse": float(math.sqrt(m.mean_squared_error(y_true, output))),
            "mae": float(m.mean_absolute_error(y_true, output)),
            "r2": float(m.r2_score(y_true, output)),
        }
    proba = np.asarray(output, dtype=np.float64)
    labels = proba.argmax(axis=1)
    out = {
        "accuracy": float(m.accuracy_score(y_true, labels)),
        "balanced_accuracy": float(m.balanced_accuracy_score(y_true, labels)),
        "f1_macro": float(m.f1_score(y_true, labels, average="macro")),
        "log_loss": float(m.log_loss(y_true, np.clip(proba, 1e-15, 1.0), labels=list(range(n_classes)))),
    }
    if len(set(y_true)) == n_classes:
        if n_classes == 2:
            out["roc_auc"] = float(m.roc_auc_score(y_true, proba[:, 1]))
        else:
            out["roc_auc"] = float(m.roc_auc_score(y_true, proba, multi_class="ovr", average="macro"))
    return {k: v for k, v in out.items() if math.isfinite(v)}


def train(family, task, params, x_train, y_train, x_valid, y_valid, n_classes, seed, threads):
    """Fits the model, printing report lines; returns (pipeline steps, final metrics)."""
    import numpy as np
    from sklearn import ensemble, linear_model, neural_network, tree
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    classification = task != "regression"
    steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
    if family in ("logistic", "linear", "mlp"):
        steps.append(("scale", StandardScaler()))
    xt, xv = x_train, x_valid
    for _, step in steps:
        xt = step.fit_transform(xt).astype(np.float32)
        xv = step.transform(xv).astype(np.float32)
    y_train = np.asarray(y_train)

    def predict(model):
        return model.predict_proba(xv) if classification else model.predict(xv)

    def judge(model):
        return metrics_for(task, y_valid, predict(model), n_classes)

    p = params
    n = len(y_train)
    if family == "logistic":
        c = 1.0 / (p["alpha"] * n) if p["alpha"] > 0 else 1e12
        if p["penalty"] == "l1":
            model = linear_model.LogisticRegression(C=c, l1_ratio=1.0, solver="saga", max_iter=2000)
        else:
            model = linear_model.LogisticRegression(C=c, l1_ratio=0.0, max_iter=2000)
        model.fit(xt, y_train)
        report(max(int(np.max(model.n_iter_)), 1), judge(model))
    elif family == "linear":
        if p["penalty"] == "l1":
            model = linear_model.Lasso(alpha=p["alpha"], max_iter=10000)
        else:
            model = linear_model.Ridge(alpha=p["alpha"] * n)
        model.fit(xt, y_train)
        report(1, judge(model))
    elif family == "decision_tree":
        cls = tree.DecisionTreeClassifier if classification else tree.DecisionTreeRegressor
        model = cls(max_depth=p["max_depth"], min_samples_leaf=p["min_samples_leaf"], random_state=seed)
        model.fit(xt, y_train)
        report(1, judge(model))
    elif family == "random_forest":
        cls = ensemble.RandomForestClassifier if classification else ensemble.RandomForestRegressor
        total = p["n_estimators"]
        model = cls(n_estimators=0, max_depth=p["max_depth"], max_features=p["max_features"],
                    min_samples_leaf=p["min_samples_leaf"], n_jobs=threads, random_state=seed,
                    warm_start=True)
        chunk = max(math.ceil(total / 10), threads, 1)
        built = 0
        while built < total:
            built = min(built + chunk, total)
            model.set_params(n_estimators=built)
            model.fit(xt, y_train)
            report(built, judge(model))
    elif family == "gradient_boosting":
        # scikit-learn's GradientBoosting (skl2onnx 1.20 cannot convert HistGradientBoosting
        # trees from scikit-learn 1.9). It has no minimum-hessian or L2 knob on leaves, so
        # `min_child_weight` and `l2` are accepted and ignored.
        cls = (ensemble.GradientBoostingClassifier if classification
               else ensemble.GradientBoostingRegressor)
        total = p["n_estimators"]
        model = cls(n_estimators=0, learning_rate=p["learning_rate"], max_leaf_nodes=p["max_leaves"],
                    max_depth=p["max_depth"], subsample=p["subsample"], min_samples_leaf=20,
                    random_state=seed, warm_start=True)
        every = max(math.ceil(total / 10), 1)
        done = 0
        while done < total:
            done = min(done + every, total)
            model.set_params(n_estimators=done)
            model.fit(xt, y_train)
            report(done, judge(model))
    elif family == "mlp":
        cls = neural_network.MLPClassifier if classification else neural_network.MLPRegressor
        activation = {"sigmoid": "logistic"}.get(p["activation"], p["activation"])
        model = cls(hidden_layer_sizes=(p["hidden_units"],) * p["hidden_layers"],
                    activation=activation, learning_rate_init=p["learning_rate"],
                    batch_size=min(p["batch_size"], n), alpha=p["weight_decay"], random_state=seed)
        epochs = p["epochs"]
        every = max(math.ceil(epochs / 10), 1)
        for epoch in range(1, epochs + 1):
            if classification:
                model.partial_fit(xt, y_train, classes=list(range(n_classes)))
            else:
                model.partial_fit(xt, y_train)
            if epoch % every == 0 or epoch == epochs:
                report(epoch, judge(model))
    else:  # resolve_params already rejected it
        raise BadInput(f"unknown family {family!r}")
    steps.append(("model", model))
    return steps, predict(model), judge(model)


# ---------------------------------------------------------------------------------------------
# Export


def export(steps, columns, width, classification, threads):
    """The sklearn pipeline through skl2onnx, behind a prefix that takes one [N, 1] input per raw
    column: string categories through LabelEncoder to their codes, then Concat."""
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline(steps)
    options = {id(steps[-1][1]): {"zipmap": False}} if classification else None
    model = convert_sklearn(
        pipeline,
        initial_types=[("features", FloatTensorType([None, width]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    graph = model.graph
    del graph.input[:]
    prefix, concat_inputs = [], []
    for c in columns:
        if c["kind"] == "numeric":
            graph.input.append(helper.make_tensor_value_info(c["input"], TensorProto.FLOAT, [None, 1]))
            concat_inputs.append(c["input"])
        else:
            graph.input.append(helper.make_tensor_value_info(c["input"], TensorProto.STRING, [None, 1]))
            coded = c["input"] + "__code"
            prefix.append(helper.make_node(
                "LabelEncoder", [c["input"]], [coded], domain="ai.onnx.ml",
                keys_strings=c["levels"], values_floats=[float(i) for i in range(len(c["levels"]))],
                default_float=-1.0, name=coded))
            concat_inputs.append(coded)
    prefix.append(helper.make_node("Concat", concat_inputs, ["features"], axis=1, name="features"))
    nodes = prefix + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    # LabelEncoder with float values needs ai.onnx.ml 2+; skl2onnx may have picked 1 for the rest,
    # whose operators are unchanged in 3. Deduplicate the imports on the way.
    versions = {}
    for o in model.opset_import:
        versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    if prefix[:-1]:
        versions["ai.onnx.ml"] = max(versions.get("ai.onnx.ml", 0), 3)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    outputs = [o.name for o in graph.output]
    wanted = ["label", "probabilities"] if classification else ["variable"]
    if outputs != wanted:
        raise RuntimeError(f"skl2onnx produced outputs {outputs}, expected {wanted}")
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def onnx_feeds(columns, rows):
    import numpy as np

    feeds = {}
    for c in columns:
        cells = [c["cells"][r] for r in rows]
        if c["kind"] == "numeric":
            feeds[c["input"]] = np.asarray([[math.nan if v is None else float(v)] for v in cells],
                                           dtype=np.float32)
        else:
            feeds[c["input"]] = np.asarray([["" if v is None else v] for v in cells], dtype=object)
    return feeds


def parity_and_latency(model_bytes, columns, valid, expected, classification, threads):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    got = session.run(None, onnx_feeds(columns, valid))
    expected = np.asarray(expected, dtype=np.float64)
    if classification:
        label, proba = got[0], np.asarray(got[1], dtype=np.float64)
        worst = float(np.max(np.abs(proba - expected)))
        if worst > PARITY_TOLERANCE:
            raise ParityMismatch(f"ONNX probabilities differ from scikit-learn by {worst:.3g}")
        top = np.sort(expected, axis=1)
        tie = (top[:, -1] - top[:, -2]) < 1e-5 if expected.shape[1] > 1 else np.zeros(len(label), bool)
        bad = (label != expected.argmax(axis=1)) & ~tie
        if bad.any():
            raise ParityMismatch(f"ONNX labels differ from scikit-learn on {int(bad.sum())} rows")
    else:
        values = np.asarray(got[0], dtype=np.float64).reshape(-1)
        worst = float(np.max(np.abs(values - expected) / np.maximum(np.abs(expected), 1.0)))
        if worst > PARITY_TOLERANCE:
            raise ParityMismatch(f"ONNX predictions differ from scikit-learn by {worst:.3g} (relative)")
    session.run(None, onnx_feeds(columns, valid[:1]))  # warm-up
    times = []
    for i in range(LATENCY_SAMPLES):
        feeds = onnx_feeds(columns, [valid[i % len(valid)]])
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return {"p50Micros": times[len(times) // 2], "p99Micros": times[min(len(times) - 1, int(len(times) * 0.99))]}


# ---------------------------------------------------------------------------------------------
# Results


def write_result(output, result):
    body = json.dumps(result, indent=2)
    try:
        os.makedirs(output, exist_ok=True)
        partial = os.path.join(output, ".result.json.partial")
        with open(partial, "w") as f:
            f.write(body)
        os.replace(partial, os.path.join(output, "result.json"))
    except OSError as e:
        log(f"failed to write result.json: {e}")
    path = os.environ.get("FLYWHEEL_TERMINATION_LOG", TERMINATION_LOG)
    if os.path.exists(path):
        message = json.dumps(result, separators=(",", ":"))
        if len(message.encode()) > TERMINATION_MESSAGE_LIMIT and result.get("message"):
            trimmed = dict(result)
            overflow = len(message.encode()) - TERMINATION_MESSAGE_LIMIT
            trimmed["message"] = result["message"][: max(0, len(result["message"]) - overflow - 3)] + "..."
            message = json.dumps(trimmed, separators=(",", ":"))
        try:
            with open(path, "w") as f:
                f.write(message)
        except OSError as e:
            log(f"failed to write {path}: {e}")


def run(args):
    started = time.perf_counter()
    timings = {}
    family = args.family
    params = resolve_params(family, args.params, args.budget)
    if args.threads < 1:
        raise BadInput("--threads must be at least 1")
    uri, data = fetch(args.dataset)
    header, rows = parse_csv(data)
    task, classes, y, columns, n_rows = infer(header, rows, args.target, args.task)
    classification = task != "regression"
    if family == "logistic" and not classification:
        raise BadInput("family logistic cannot learn a regression task")
    if family == "linear" and classification:
        raise BadInput(f"family linear cannot learn a {task} task")
    regression_metrics = {"rmse", "mae", "r2"}
    if args.metric and (args.metric in regression_metrics) == classification:
        raise BadInput(f"metric {args.metric} does not apply to a {task} task")
    timings["load_seconds"] = time.perf_counter() - started
    log(f"loaded {n_rows} rows, {len(columns)} features, task {task}")

    stage = time.perf_counter()
    train_rows, valid_rows = holdout(y, classification, args.holdout, args.seed)
    matrix = encode(columns, train_rows)
    timings["featurize_seconds"] = time.perf_counter() - stage

    import numpy as np
    from threadpoolctl import threadpool_limits

    stage = time.perf_counter()
    y = np.asarray(y)
    with threadpool_limits(limits=args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps, valid_output, metrics = train(
            family, task, params, matrix[train_rows], y[train_rows], matrix[valid_rows],
            y[valid_rows], len(classes), args.seed, args.threads)
    timings["train_seconds"] = time.perf_counter() - stage

    stage = time.perf_counter()
    model_bytes = export(steps, columns, matrix.shape[1], classification, args.threads)
    latency = parity_and_latency(model_bytes, columns, valid_rows, valid_output, classification,
                                 args.threads)
    timings["export_seconds"] = time.perf_counter() - stage

    digest = hashlib.sha256(data).hexdigest()
    card = {
        "card_version": 1,
        "version": args.trial or f"{family}-{digest[:12]}",
        "family": family,
        "params": params,
        "task": task,
        "target": args.target,
        "classes": classes,
        "inputs": [{"name": c["name"], "input": c["input"], "kind": c["kind"],
                    "nullable": c["nullable"]} for c in columns],
        "outputs": ({"label": "label", "probabilities": "probabilities"} if classification
                    else {"label": "variable"}),
        "metrics": metrics,
        "latency": latency,
        "model_bytes": len(model_bytes),
        "lineage": {
            **({"study": args.study} if args.study else {}),
            **({"trial": args.trial} if args.trial else {}),
            "dataset_uri": uri,
            "dataset_digest": digest,
            "dataset_rows": n_rows,
            "trainer_version": TRAINER_VERSION,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
        },
    }
    # Stage, then rename into place: the card last, so a reader that sees it also sees the model.
    output = os.path.abspath(args.output)
    os.makedirs(output, exist_ok=True)
    staging = os.path.join(output, f".partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        with open(os.path.join(staging, "model.onnx"), "wb") as f:
            f.write(model_bytes)
        with open(os.path.join(staging, "model.json"), "w") as f:
            json.dump(card, f, indent=2)
        for name in ("model.onnx", "model.json"):
            os.replace(os.path.join(staging, name), os.path.join(output, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    timings["total_seconds"] = time.perf_counter() - started
    return {
        "outcome": "succeeded",
        "metrics": metrics,
        "artifact_uri": "file://" + output,
        "latency": latency,
        "model_bytes": len(model_bytes),
        "timings": timings,
    }


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    try:
        result = run(args)
    except Exception as e:  # every failure becomes a result document and an exit code
        if isinstance(e, BadInput):
            reason, code = "BadInput", BAD_INPUT
        elif isinstance(e, ParityMismatch):
            reason, code = "ParityMismatch", INTERNAL
        else:
            reason, code = "Internal", INTERNAL
        message = str(e) if isinstance(e, (BadInput, ParityMismatch)) else f"{type(e).__name__}: {e}"
        if len(message) > 2000:
            message = message[:2000] + "..."
        write_result(args.output, {"outcome": "failed", "reason": reason, "message": message,
                                   "metrics": {},
                                   "timings": {"total_seconds": time.perf_counter() - started}})
        log(f"trial failed: {message}")
        return code
    write_result(args.output, result)
    log(f"trial succeeded: {result['metrics']}")
    return SUCCESS


if __name__ == "__main__":
    sys.exit(main())
