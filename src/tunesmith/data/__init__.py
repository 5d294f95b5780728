"""Turn a user's files or URLs into a clean training set, with a report.

result = prepare_data(["jokes.csv"], DataConfig(column="Joke"), Path("out"))
train, val = load_training_examples("out")
"""

from tunesmith.data.config import DataConfig
from tunesmith.data.examples import Example
from tunesmith.data.formats import SourceInfo
from tunesmith.data.prepare import (
    DATA_TXT,
    HISTOGRAM_PNG,
    STATS_JSON,
    TRAIN_JSONL,
    VAL_JSONL,
    DataResult,
    load_training_examples,
    prepare_data,
)
from tunesmith.data.stats import LengthStats
from tunesmith.data.summary import format_report

__all__ = [
    "DATA_TXT",
    "HISTOGRAM_PNG",
    "STATS_JSON",
    "TRAIN_JSONL",
    "VAL_JSONL",
    "DataConfig",
    "DataResult",
    "Example",
    "LengthStats",
    "SourceInfo",
    "format_report",
    "load_training_examples",
    "prepare_data",
]
