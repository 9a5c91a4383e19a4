"""Preprocessing: imputation, scaling, encoding and date parts, fitted on the train split.

:class:`~faucet_core.preprocessing.config.PreprocessingConfig` says what to do;
:func:`~faucet_core.preprocessing.fit.fit_preprocessor` fits it on statistics of the train
split (one warehouse query, or one pass over the cached train chunks); the resulting
:class:`~faucet_core.preprocessing.preprocessor.Preprocessor` transforms batches, and is
saved and loaded as JSON for serving.
"""

from faucet_core.preprocessing.config import ColumnConfig, PreprocessingConfig
from faucet_core.preprocessing.fit import fit_preprocessor
from faucet_core.preprocessing.preprocessor import ColumnTransform, Preprocessor
from faucet_core.preprocessing.stats import ColumnStats, StatsRequest, StatsSql, TrainStats

__all__ = [
    "ColumnConfig",
    "ColumnStats",
    "ColumnTransform",
    "PreprocessingConfig",
    "Preprocessor",
    "StatsRequest",
    "StatsSql",
    "TrainStats",
    "fit_preprocessor",
]
