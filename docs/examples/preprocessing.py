"""Preprocessing: fitted on the train split, applied to every batch, saved for serving."""

import os
import tempfile
from pathlib import Path

import numpy as np

from faucet_core import Preprocessor, get_batch_reader

with get_batch_reader(
    datastore="duckdb",
    database=os.environ["FAUCET_EXAMPLE_DATABASE"],
    table_name="train",  # x1..x4 (x3 has NULLs), a text column `region`, a label
    split_key="id",
    label_columns=["label"],
    test_split_percent=20,
    output="numpy",
    preprocessing={
        "auto": True,  # impute, standardize, one-hot: chosen per column
        "exclude": ["id"],  # passed through as it is
        "columns": {"x4": {"scale": "minmax", "clip": [0.0, 0.9]}},  # over auto's choice
    },
) as reader:
    preprocessor = reader.preprocessor
    print(preprocessor.feature_names)  # id, x1, x2, x3, x3__missing, x4, region=..., ...
    batch = next(reader.iter_epoch())
    assert batch["features"].dtype == np.float32  # one C-contiguous matrix
    spec = Path(tempfile.mkdtemp()) / "preprocessor.json"
    preprocessor.save(spec)  # human-readable JSON, versioned

# Serving: the same transform, from the saved file, on one request's rows.
served = Preprocessor.load(spec)
request = {"id": [1], "x1": [0.2], "x2": [0.5], "x3": [None], "x4": [0.95], "region": ["mars"]}
features = served.transform(request)  # NULL imputed, x4 clipped, "mars" in the other slot
assert features.shape == (1, len(served.feature_names)) and np.isfinite(features).all()
print(dict(zip(served.feature_names, np.round(features[0].astype(float), 3), strict=True)))
