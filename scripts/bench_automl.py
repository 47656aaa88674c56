"""Flywheel vs FLAML at the same wall-clock budget and cores (see scripts/bench-automl.sh).

Both see the same 80 % training split; both are scored on the same held-out 20 %. Flywheel's
score comes from its promoted model served by flywheel-server (V1 predict over HTTP), so the
number includes everything a user would get.

With `--seeds 0,1,2`, each seed is one run: the split's random_state, the study's sampler seed
and FLAML's seed. Per dataset it prints the promoted model's selection score (what the study
ranked it by: the mean over folds or the validation split, from its model card) next to its
held-out score, as mean ± std over seeds, so the optimism of selection is visible.
"""
import argparse, json, math, os, socket, subprocess, sys, time, urllib.request

import numpy as np
import pandas as pd
from flaml import AutoML
from sklearn.model_selection import train_test_split

TASKS = {
    "adult": ("income", "classification", "accuracy"),
    "breast_cancer": ("diagnosis", "classification", "accuracy"),
    "iris": ("species", "classification", "accuracy"),
    "penguins": ("species", "classification", "accuracy"),
    "letter": ("lettr", "classification", "accuracy"),
    "diabetes": ("progression", "regression", "r2"),
    "wage": ("wage", "regression", "r2"),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_bool(v):
    """A boolean cell as the server should receive it. Numbers are read as numbers: `1.0` is
    true (a text comparison against "1" would call it false and silently mis-score the row)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    text = str(v).strip().lower()
    if text in ("true", "yes"):
        return True
    if text in ("false", "no"):
        return False
    return float(text) != 0.0


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def score(kind, y_true, y_pred):
    if kind == "classification":
        return float(np.mean(np.asarray(y_true, dtype=str) == np.asarray(y_pred, dtype=str)))
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    return float(1 - np.sum((y_true - y_pred) ** 2) / np.sum((y_true - y_true.mean()) ** 2))


def run_flywheel(args, name, train_path, test, target, kind, metric, seed):
    work = os.path.join(args.work, name)
    study_dir = os.path.join(work, "study")
    subprocess.run(["rm", "-rf", study_dir], check=True)
    manifest = os.path.join(work, "study.yaml")
    with open(manifest, "w") as f:
        f.write(f"""apiVersion: flywheel.dev/v1alpha1
kind: Study
metadata:
  name: bench-{name.replace('_', '-')}
spec:
  dataset: {{uri: {train_path}, target: {target}, task: {'regression' if kind == 'regression' else 'auto'}}}
  objective: {{metric: {metric}}}
  algorithm: {{name: tpe, seed: {seed}}}
  budget: {{maxTrials: 10000, parallelism: 2, timeoutSeconds: {args.budget}, trialTimeoutSeconds: {args.budget}}}
""")
    port = free_port()
    started = time.time()
    proc = subprocess.Popen(
        [args.flywheel, "run", manifest, f"--dir={study_dir}", f"--serve=127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    model_dir, trials = None, 0
    try:
        for line in proc.stdout:
            if line.startswith("model: "):
                model_dir = line.split(": ", 1)[1].strip()
            if line.startswith("["):
                trials += 1
            if line.startswith("serving"):
                break
        elapsed = time.time() - started
        if model_dir is None:
            return None, None, trials, elapsed, "-"
        card = json.load(open(os.path.join(model_dir, "model.json")))
        selection = card.get("metrics", {}).get(metric)
        kinds = {c["name"]: c["kind"] for c in card["inputs"]}
        instances = []
        for _, row in test.iterrows():
            inst = {}
            for col, col_kind in kinds.items():
                v = row.get(col)
                if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == ""):
                    inst[col] = None
                elif col_kind == "categorical":
                    inst[col] = str(v)
                elif col_kind == "boolean":
                    inst[col] = to_bool(v)
                else:
                    inst[col] = float(v)
            instances.append(inst)
        predictions = []
        for i in range(0, len(instances), 1000):
            body = json.dumps({"instances": instances[i:i + 1000]}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/bench-{name.replace('_', '-')}:predict",
                                         data=body, headers={"Content-Type": "application/json"})
            predictions += json.load(urllib.request.urlopen(req))["predictions"]
        return score(kind, test[target], predictions), selection, trials, elapsed, card["family"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["pkill", "-f", "--", f"--model-name=bench-{name.replace('_', '-')}"], check=False)


def run_flaml(args, train, test, target, kind, metric, seed):
    automl = AutoML()
    started = time.time()
    automl.fit(X_train=train.drop(columns=[target]), y_train=train[target], task=kind,
               metric=metric, time_budget=args.budget, n_jobs=2, seed=seed, verbose=0)
    elapsed = time.time() - started
    return score(kind, test[target], automl.predict(test.drop(columns=[target]))), elapsed, automl.best_estimator


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=int, default=60)
    p.add_argument("--seeds", default="0",
                   help="comma-separated seeds: split random_state, study seed and FLAML seed per run")
    p.add_argument("--datasets-dir", required=True)
    p.add_argument("--flywheel", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("datasets", nargs="+")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    rows = []
    for name in args.datasets:
        target, kind, metric = TASKS[name]
        data = pd.read_csv(os.path.join(args.datasets_dir, f"{name}.csv"), keep_default_na=True)
        strat = data[target] if kind == "classification" else None
        for seed in seeds:
            train, test = train_test_split(data, test_size=0.2, random_state=seed, stratify=strat)
            os.makedirs(os.path.join(args.work, name), exist_ok=True)
            train_path = os.path.join(args.work, name, "train.csv")
            train.to_csv(train_path, index=False)
            fw, sel, fw_trials, fw_s, fw_family = run_flywheel(
                args, name, train_path, test, target, kind, metric, seed)
            fl, fl_s, fl_est = run_flaml(args, train, test, target, kind, metric, seed)
            rows.append((name, seed, metric, fw, sel, fw_family, fw_trials, fw_s, fl, fl_est, fl_s))
            print(f"done {name} seed {seed}", file=sys.stderr)
    print(f"\n{args.budget} s budget, 2 cores, 80/20 split (random_state = seed), held-out score")
    print("| dataset | seed | metric | flywheel selection | flywheel (served) | flywheel winner | trials | flywheel s | FLAML | FLAML best | FLAML s |")
    print("|---|---:|---|---:|---:|---|---:|---:|---:|---|---:|")
    for name, seed, metric, fw, sel, fam, n, fw_s, fl, est, fl_s in rows:
        fw_text = "failed" if fw is None else f"{fw:.4f}"
        sel_text = "-" if sel is None else f"{sel:.4f}"
        print(f"| {name} | {seed} | {metric} | {sel_text} | {fw_text} | {fam} | {n} | {fw_s:.0f} | {fl:.4f} | {est} | {fl_s:.0f} |")
    print(f"\nper dataset over seeds {args.seeds} (mean ± std; gap = selection − held-out)")
    print("| dataset | metric | flywheel selection | flywheel held-out (served) | gap | FLAML held-out | failed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.datasets:
        mine = [r for r in rows if r[0] == name]
        gaps = [r[4] - r[3] for r in mine if r[3] is not None and r[4] is not None]
        failed = sum(1 for r in mine if r[3] is None)
        print(f"| {name} | {mine[0][2]} | {mean_std([r[4] for r in mine])} | {mean_std([r[3] for r in mine])} "
              f"| {mean_std(gaps)} | {mean_std([r[8] for r in mine])} | {failed} |")


if __name__ == "__main__":
    main()
