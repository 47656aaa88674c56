"""Builds the model both servers of scripts/bench-server.sh serve: one scikit-learn pipeline.

Usage:  .venv-bench-mlserver/bin/python scripts/bench_server_model.py OUT_DIR [MLSERVER_HTTP_PORT]

Trains the penguins random forest exactly as the server's test fixture (it reuses
server/tests/fixtures/make_fixtures.py, so the same columns, pipeline and seed), then writes

- OUT_DIR/penguins_rf/: model.onnx (skl2onnx) + model.json + expected.json, what flywheel-server
  serves (the generator checks that ONNX Runtime agrees with scikit-learn on sample rows);
- OUT_DIR/mlserver/: settings.json and penguins_rf/model-settings.json + model.joblib, the same
  fitted pipeline for MLServer's scikit-learn runtime.

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
