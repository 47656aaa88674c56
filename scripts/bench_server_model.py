"""Builds the model both servers of scripts/bench-server.sh serve: one scikit-learn pipeline.

Usage:  .venv-bench-mlserver/bin/python scripts/bench_server_model.py OUT_DIR [MLSERVER_HTTP_PORT]

Trains the penguins random forest exactly as the server's test fixture (it reuses
server/tests/fixtures/make_fixtures.py, so the same columns, pipeline and seed), then writes

- OUT_DIR/penguins_rf/: model.onnx (skl2onnx) + model.json + expected.json, what flywheel-server
  serves (the generator checks that ONNX Runtime agrees with scikit-learn on sample rows);
- OUT_DIR/mlserver/: settings.json and penguins_rf/model-settings.json + model.joblib, the same
  fitted pipeline for MLServer's scikit-learn runtime;
- OUT_DIR/penguins_mlp/: the same preprocessing with an MLP (three hidden layers of 512 units)
  instead of the forest, for flywheel-server only: a model whose inference, not HTTP, dominates
  a single-row request, and whose batches run as matrix products rather than one matrix-vector
  product per row, to measure what dynamic batching buys when inference is the cost.

The pipeline's ColumnTransformer selects columns by position, so MLServer's pandas codec
(`"content_type": "pd"` on the request, inputs in the card's order) feeds it the same frame.
"""

import json
import os
import sys

import joblib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "server", "tests", "fixtures"))

import make_fixtures  # noqa: E402  (the fixture generator, reused for an identical model)


def write_model(name, onx, model_card, expected):
    """make_fixtures.write without its size limit (meant for committed fixtures)."""
    d = os.path.join(make_fixtures.HERE, name)
    os.makedirs(d, exist_ok=True)
    data = onx.SerializeToString()
    model_card["model_bytes"] = len(data)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(data)
    for fname, obj in (("model.json", model_card), ("expected.json", expected)):
        with open(os.path.join(d, fname), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def penguins_mlp(build):
    """The penguins pipeline of make_fixtures.penguins() with an MLP as the classifier."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    cols = make_fixtures.PENGUIN_COLUMNS
    hidden = (512, 512, 512)
    # 2 MB of weights: fine for a benchmark model, over the size make_fixtures allows fixtures.
    make_fixtures.write = write_model
    pipe = Pipeline([
        ("prep", make_fixtures.penguin_preprocessing()),
        ("clf", MLPClassifier(hidden_layer_sizes=hidden, max_iter=300, random_state=make_fixtures.SEED)),
    ])
    build(
        "penguins_mlp", "penguins.csv", "species", cols, pipe, "mlp",
        {"hidden_layers": len(hidden), "hidden_units": hidden[0]}, False, rows_with_missing=(3, 8),
    )


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: bench_server_model.py OUT_DIR [MLSERVER_HTTP_PORT]")
    out = os.path.abspath(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8081
    mlserver = os.path.join(out, "mlserver")
    os.makedirs(os.path.join(mlserver, "penguins_rf"), exist_ok=True)

    fitted = {}
    build = make_fixtures.classifier_fixture

    def capture(name, csv, target, cols, pipe, *args, **kwargs):
        build(name, csv, target, cols, pipe, *args, **kwargs)
        fitted[name] = pipe

    # write() puts the model folder under HERE: point it at OUT_DIR instead of the fixtures.
    make_fixtures.HERE = out
    make_fixtures.classifier_fixture = capture
    make_fixtures.penguins()
    joblib.dump(fitted["penguins_rf"], os.path.join(mlserver, "penguins_rf", "model.joblib"))
    penguins_mlp(build)

    with open(os.path.join(mlserver, "settings.json"), "w") as f:
        json.dump(
            {
                "http_port": port,
                "grpc_port": port + 1,
                "metrics_port": port + 2,
                # Inference in the server process: no worker-pool hop per request, MLServer's
                # fastest setting for small models on one core.
                "parallel_workers": 0,
                "debug": False,
            },
            f,
            indent=2,
        )
    with open(os.path.join(mlserver, "penguins_rf", "model-settings.json"), "w") as f:
        json.dump(
            {
                "name": "penguins_rf",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            },
            f,
            indent=2,
        )
    print(f"models written under {out}")


if __name__ == "__main__":
    main()
