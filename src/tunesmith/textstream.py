"""The text of one sequence as its tokens arrive: stop strings end it, and text that might
still become a stop string, or is an incomplete UTF-8 character, is held back from streaming.
Used by the library's generator (generate.py) and by the server's batcher, which also keeps
the stop string when asked, as vLLM's `include_stop_str_in_output` does.
"""

from __future__ import annotations

from tunesmith.tokenizer import GPT2Tokenizer


class TextTracker:
    """One sequence's text: add() each new token, take_new_text() what can be streamed."""

    def __init__(
        self,
        tokenizer: GPT2Tokenizer,
        stops: tuple[str, ...] = (),
        keep_stop: bool = False,
        skip_eos: bool = True,
    ):
        self.tokenizer, self.stops, self.keep_stop = tokenizer, stops, keep_stop
        self.skip_eos = skip_eos  # the end-of-text token ends a sequence, it is not text
        self.ids: list[int] = []
        self.text, self.sent = "", 0
        # Re-decoding only the tail keeps each step cheap: text before `frozen_chars` is final.
        self._frozen_ids, self._frozen_text = 0, ""

    def add(self, token: int) -> bool:
        """Take a new token; True when a stop string appeared (the text is cut there)."""
        if not (self.skip_eos and token == self.tokenizer.eos_id):
            self.ids.append(token)
        tail = self.tokenizer.decode(self.ids[self._frozen_ids :])
        self.text = self._frozen_text + tail
        if not self.stops:
            self._freeze(tail)
            return False
        cuts = [(self.text.find(s), s) for s in self.stops if s in self.text]
        if cuts:
            at, stop = min(cuts)
            self.text = self.text[: at + len(stop) if self.keep_stop else at]
            return True
        return False

    def _freeze(self, tail: str) -> None:
        # Text ending in a complete character never changes when tokens are added after it.
        if tail and not tail.endswith("\ufffd") and len(self.ids) - self._frozen_ids > 16:
            self._frozen_ids, self._frozen_text = len(self.ids), self.text

    def take_new_text(self, final: bool) -> str:
        """The text not yet handed out that can no longer change."""
        safe = self.text
        if not final:
            safe = safe.rstrip("\ufffd")  # bytes of a character still to come
            safe = safe[: len(safe) - self._stop_prefix_len(safe)]
        delta = safe[self.sent :]
        self.sent = max(self.sent, len(safe))
        return delta

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest end of text that begins some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
