"""Ensemble vs best single trial (see scripts/bench-ensemble.sh).

For each dataset: an 80/20 split (random_state 0, stratified for classification); `flywheel run`
on the 80 % with a short trial budget; then both the best single trial's model.onnx and the
ensemble's model.onnx are scored in ONNX Runtime on the held-out 20 %, next to the validation
scores the study recorded (the ensemble's is measured on the rows it was selected on, so it is
optimistic; the holdout column is the honest one).
"""
import argparse, csv, json, math, os, subprocess, sys

import numpy as np
import onnxruntime as ort
from sklearn.model_selection import train_test_split

TASKS = {
    "breast_cancer": ("diagnosis", "classification"),
    "penguins": ("species", "classification"),
    "iris": ("species", "classification"),
    "diabetes": ("progression", "regression"),
    "wage": ("wage", "regression"),
}
MISSING = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"}


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def feeds(card, header, rows):
    out = {}
    for col in card["inputs"]:
        values = [r[header.index(col["name"])] for r in rows]
        if col["kind"] == "categorical":
            out[col["input"]] = np.array(values, dtype=object).reshape(-1, 1)
        elif col["kind"] == "boolean":
            conv = [math.nan if v in MISSING else float(v.lower() in ("true", "1", "yes", "1.0")) for v in values]
            out[col["input"]] = np.array(conv, dtype=np.float32).reshape(-1, 1)
        else:
            conv = [math.nan if v in MISSING else float(v) for v in values]
            out[col["input"]] = np.array(conv, dtype=np.float32).reshape(-1, 1)
    return out


def holdout_scores(model_dir, header, rows, target, kind):
    card = json.load(open(os.path.join(model_dir, "model.json")))
    session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds(card, header, rows))))
    truth = [r[header.index(target)] for r in rows]
    if kind == "classification":
        classes = card["classes"]
        labels = outputs[card["outputs"]["label"]]
        proba = outputs[card["outputs"]["probabilities"]]
        y = np.array([classes.index(t) for t in truth])
        accuracy = float(np.mean(labels == y))
        log_loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1))))
        return {"accuracy": accuracy, "log_loss": log_loss}
    predicted = outputs[card["outputs"]["label"]].reshape(-1).astype(float)
    y = np.array([float(t) for t in truth])
    r2 = 1 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2)
    return {"r2": float(r2), "rmse": float(np.sqrt(np.mean((y - predicted) ** 2)))}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets-dir", required=True)
    p.add_argument("--flywheel", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--metric-classification", default="log_loss")
    p.add_argument("datasets", nargs="+")
    args = p.parse_args()
    lines = []
    for name in args.datasets:
        target, kind = TASKS[name]
        metric = args.metric_classification if kind == "classification" else "r2"
        header, rows = read_csv(os.path.join(args.datasets_dir, f"{name}.csv"))
        labels = [r[header.index(target)] for r in rows]
        train_idx, test_idx = train_test_split(
            np.arange(len(rows)), test_size=0.2, random_state=0,
            stratify=labels if kind == "classification" else None)
        work = os.path.join(args.work, name)
        os.makedirs(work, exist_ok=True)
        train_path = os.path.join(work, "train.csv")
        with open(train_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows[i] for i in sorted(train_idx))
        test = [rows[i] for i in sorted(test_idx)]
        manifest = os.path.join(work, "study.yaml")
        study = f"ens-{name.replace('_', '-')}"
        with open(manifest, "w") as f:
            f.write(f"""apiVersion: flywheel.dev/v1alpha1
kind: Study
metadata:
  name: {study}
spec:
  dataset: {{uri: {train_path}, target: {target}, task: {'regression' if kind == 'regression' else 'auto'}}}
  objective: {{metric: {metric}}}
  algorithm: {{name: tpe, seed: 0}}
  budget: {{maxTrials: {args.trials}, parallelism: 2}}
""")
        study_dir = os.path.join(work, "study")
        subprocess.run(["rm", "-rf", study_dir], check=True)
        subprocess.run([args.flywheel, "run", manifest, f"--dir={study_dir}", "--no-serve"],
                       check=True, stdout=subprocess.DEVNULL)
        status = json.load(open(os.path.join(study_dir, "study.json")))["status"]
        best = status["bestTrial"]
        ens = status.get("ensemble") or {}
        single_dir = best["artifactUri"].removeprefix("file://")
        single = holdout_scores(single_dir, header, test, target, kind)
        ensemble = holdout_scores(os.path.join(study_dir, "ensemble"), header, test, target, kind) if ens.get("artifactUri") else None
        lines.append((name, metric, best, ens, single, ensemble))
        print(f"done {name}", file=sys.stderr)
    print(f"\n{args.trials} trials (TPE, seed 0), 2 parallel; 80/20 split (random_state 0); holdout = the unseen 20 %")
    print("| dataset | metric | best single (valid) | ensemble (valid, selection rows) | members | promoted | holdout best single | holdout ensemble | ensemble p99 | ensemble size |")
    print("|---|---|---:|---:|---|---|---|---|---:|---:|")
    for name, metric, best, ens, single, ensemble in lines:
        fmt = lambda d: ", ".join(f"{k} {v:.4f}" for k, v in d.items()) if d else "-"
        lat = ens.get("latency", {}).get("p99Micros")
        print(f"| {name} | {metric} | {best['objective']:.4f} | {ens.get('objective', float('nan')):.4f} | "
              f"{' '.join(ens.get('members', []))} | {ens.get('promoted')} | {fmt(single)} | {fmt(ensemble)} | "
              f"{'-' if lat is None else f'{lat:.0f} µs'} | {ens.get('modelBytes', '-')} |")


if __name__ == "__main__":
    main()
