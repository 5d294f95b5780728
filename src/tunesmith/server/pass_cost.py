"""How long a forward pass of the model takes, learnt from the passes the server runs:
seconds = fixed + per_token * tokens + per_output * outputs, fitted by least squares over the
recent passes.

On a CPU a pass costs a fixed part (reading every weight from memory), a part per token that
goes through the layers (their products), and a part per position whose next token is drawn
(the LM head's product over the vocabulary, and sampling): a prompt token costs less than a
decoding sequence's token. The batcher uses the fit to decide whether newcomers can join the
batch's next pass without making their first token late (batcher.py).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import torch

RECENT_PASSES = 64  # the fit follows the machine's current speed


class Fit(NamedTuple):
    """Seconds of a pass: fixed, plus per token through the layers, plus per output drawn."""

    fixed: float
    per_token: float
    per_output: float

    def seconds(self, tokens: int, outputs: int) -> float:
        return self.fixed + self.per_token * tokens + self.per_output * outputs


class PassCost:
    def __init__(self) -> None:
        self._passes: deque[tuple[int, int, float]] = deque(maxlen=RECENT_PASSES)

    def record(self, tokens: int, outputs: int, seconds: float) -> None:
        self._passes.append((tokens, outputs, seconds))

    def fit(self) -> Fit | None:
        """The least-squares fit of the recent passes, no part negative; None until the passes
        seen tell the three parts apart."""
        if len(self._passes) < 3:
            return None
        rows = torch.tensor([[1.0, t, o] for t, o, _ in self._passes], dtype=torch.float64)
        seconds = torch.tensor([[s] for _, _, s in self._passes], dtype=torch.float64)
        if int(torch.linalg.matrix_rank(rows)) < 3:
            return None
        parts = torch.linalg.lstsq(rows, seconds).solution[:, 0].tolist()
        return Fit(*(max(part, 0.0) for part in parts))
