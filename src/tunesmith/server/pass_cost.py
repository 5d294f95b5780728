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

import torch

RECENT_PASSES = 64  # the fit follows the machine's current speed


class PassCost:
    def __init__(self) -> None:
        self._passes: deque[tuple[int, int, float]] = deque(maxlen=RECENT_PASSES)

    def record(self, tokens: int, outputs: int, seconds: float) -> None:
        self._passes.append((tokens, outputs, seconds))

    def fit(self) -> tuple[float, float, float] | None:
        """(fixed, per token, per output) in seconds, none negative; None until the passes
        seen tell the three apart."""
        if len(self._passes) < 3:
            return None
        rows = torch.tensor([[1.0, t, o] for t, o, _ in self._passes], dtype=torch.float64)
        seconds = torch.tensor([[s] for _, _, s in self._passes], dtype=torch.float64)
        if int(torch.linalg.matrix_rank(rows)) < 3:
            return None
        fixed, per_token, per_output = torch.linalg.lstsq(rows, seconds).solution[:, 0].tolist()
        return max(fixed, 0.0), max(per_token, 0.0), max(per_output, 0.0)

    def seconds(self, tokens: int, outputs: int) -> float | None:
        fit = self.fit()
        return None if fit is None else fit[0] + fit[1] * tokens + fit[2] * outputs
