"""Writes the trainer's Parquet test fixtures into trainer/tests/data/ (checked in; rerun after
changing this script, from the repo root: `.venv/bin/python scripts/make-parquet-fixtures.py`;
pyarrow comes from scripts/requirements-test.txt via scripts/setup-python.sh).

- penguins.parquet: examples/data/penguins.csv with typed columns (strings, doubles and int64s
  with nulls), snappy: the trainer must see the same data as in the CSV.
- types-<codec>.parquet: one small table of every scalar type the trainer reads (bool, int8/32/64,
  uint8, float32/64 with NaN and null, string, utf-8 binary, date32, timestamp), written with
  each codec: none, snappy and zstd (which the trainer reads), gzip and lz4 (which it refuses
  with a message naming the codec).
- nested.parquet: a list column, which a table of features cannot hold.
- binary.parquet: a binary column that is not UTF-8 text.
"""

import datetime
import pathlib

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

root = pathlib.Path(__file__).resolve().parent.parent
out = root / "trainer" / "tests" / "data"
out.mkdir(parents=True, exist_ok=True)

# Fixed writer settings so reruns give the same bytes.
common = dict(version="2.6", write_statistics=False, store_schema=False)
created_by = "flywheel fixtures"

penguins = pacsv.read_csv(
    root / "examples" / "data" / "penguins.csv",
    convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True),
)
for name in ["flipper_length_mm", "body_mass_g", "year"]:
    index = penguins.schema.get_field_index(name)
    penguins = penguins.set_column(index, name, penguins[name].cast(pa.int64()))
pq.write_table(penguins, out / "penguins.parquet", compression="snappy", **common)

rows = 24
labels = ["yes" if i % 3 else "no" for i in range(rows)]
types = pa.table(
    {
        "flag": pa.array([i % 2 == 0 if i % 5 else None for i in range(rows)], pa.bool_()),
        "tiny": pa.array([i % 4 - 2 for i in range(rows)], pa.int8()),
        "count": pa.array([i * 7 % 11 for i in range(rows)], pa.int32()),
        "big": pa.array([None if i % 6 == 0 else i * 1_000_003 for i in range(rows)], pa.int64()),
        "small": pa.array([i % 3 for i in range(rows)], pa.uint8()),
        "ratio": pa.array([i / 8 for i in range(rows)], pa.float32()),
        "score": pa.array(
            [float("nan") if i == 3 else None if i == 4 else i * 0.1 for i in range(rows)],
            pa.float64(),
        ),
        "color": pa.array([None if i == 5 else ["red", "green", "blue"][i % 3] for i in range(rows)]),
        "code": pa.array([["a1", "b2"][i % 2].encode() for i in range(rows)], pa.binary()),
        "day": pa.array([datetime.date(2024, 1, 1 + i % 28) for i in range(rows)], pa.date32()),
        "seen": pa.array(
            [datetime.datetime(2024, 1, 1, 12, i % 60) for i in range(rows)], pa.timestamp("ms")
        ),
        "label": pa.array(labels),
    }
)
for codec in ["none", "snappy", "gzip", "lz4", "zstd"]:
    pq.write_table(types, out / f"types-{codec}.parquet", compression=codec, **common)

nested = pa.table(
    {
        "x": pa.array([1.0, 2.0, 3.0, 4.0]),
        "tags": pa.array([["a"], ["b", "c"], [], ["d"]]),
        "y": pa.array(["a", "b", "a", "b"]),
    }
)
pq.write_table(nested, out / "nested.parquet", compression="none", **common)

binary = pa.table(
    {
        "x": pa.array([1.0, 2.0, 3.0, 4.0]),
        "blob": pa.array([b"\xff\xfe", b"\x00\x01", b"\xc3", b"ok"], pa.binary()),
        "y": pa.array(["a", "b", "a", "b"]),
    }
)
pq.write_table(binary, out / "binary.parquet", compression="none", **common)
print(f"fixtures written to {out}")
