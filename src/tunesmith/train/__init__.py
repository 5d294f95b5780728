"""Fine-tuning: data → batches → the training loop → a plain GPT-2 folder and a report.

from tunesmith.train import FinetuneConfig, finetune
result = finetune(FinetuneConfig(model="gpt2", data="jokes.csv", lora=True), output_dir="out")
"""

from tunesmith.train.api import FinetuneResult, finetune
from tunesmith.train.config import FinetuneConfig

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]
