"""The KV cache of a continuous batch: preallocated row slots and columns, so that sequences
join and leave without copying the whole cache.

Slots [0, rows) hold the batch's sequences, in the batch's order; the model's forward call
sees them as a (rows, n_head, columns, head_dim) view, with no copy. A joining sequence takes
the next free slot and is prefilled in place (`window`); a leaving one is replaced by the last
row (`move_row`: one row's keys and values move, not the batch's). Capacity doubles only when
it is full: slots (to a power of two) when more sequences join than there are slots, columns
when the batch's width reaches them, up to the model's context. Columns are shifted (`shift`)
only when a prompt longer than the batch's width joins, or when leading columns no row uses
any more are worth reclaiming.
"""

from __future__ import annotations

import torch

from tunesmith.model import GPT2Config, KVCache

MIN_COLUMNS = 64  # the first allocation's extra columns; later growth doubles


class SlotCache(KVCache):
    """Keys and values of up to `slots` sequences over `columns` positions, one buffer per
    layer: (slots, n_head, columns, head_dim). `rows` of them are in use."""

    def __init__(self, config: GPT2Config, slots: int, columns: int, device, dtype):
        super().__init__(config, slots, columns, device, dtype)
        self.context = config.n_positions
        self.rows = 0

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0]

    def update(self, layer: int, input_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (rows, H, T, D) at columns input_pos.. of the rows in use."""
        B, end = k.shape[0], input_pos + k.shape[2]
        assert B == self.rows and end <= self.max_len, "reserve() room before decoding"
        self.keys[layer][:B, :, input_pos:end] = k
        self.values[layer][:B, :, input_pos:end] = v
        return self.keys[layer][:B, :, :end], self.values[layer][:B, :, :end]

    def reserve(self, rows: int, columns: int) -> None:
        """Make room for `rows` slots and `columns` columns, doubling what is short."""
        assert columns <= self.context, "no row outgrows the context"
        slots, width = self.slots, self.max_len
        if rows > slots:  # the next power of two: a batch of 16 never holds more slots
            slots = 1 << (rows - 1).bit_length()
        if columns > width:
            width = min(max(columns, 2 * width), self.context)
        if (slots, width) == (self.slots, self.max_len):
            return
        B, H, C, D = self.keys[0].shape
        grown = []
        for old in self.keys + self.values:
            new = old.new_zeros(slots, H, width, D)
            new[: self.rows, :, :C] = old[: self.rows]
            grown.append(new)
        n = len(self.keys)
        self.keys, self.values, self.max_len = grown[:n], grown[n:], width

    def window(self, first_row: int, rows: int, first_column: int, columns: int) -> KVCache:
        """A cache over slots first_row.. and columns first_column.. of this one's storage:
        a prefill through it writes the newcomers' keys and values in place."""
        rs, cs = slice(first_row, first_row + rows), slice(first_column, first_column + columns)
        return _Window([k[rs, :, cs] for k in self.keys], [v[rs, :, cs] for v in self.values])

    def move_row(self, source: int, target: int, first: int, end: int) -> None:
        """Copy row `source`'s columns first..end-1 into slot `target`."""
        for buffers in (self.keys, self.values):
            for b in buffers:
                b[target, :, first:end] = b[source, :, first:end]

    def shift(self, first: int, end: int, by: int) -> None:
        """Move columns first..end-1 of the rows in use `by` columns (right when positive)."""
        assert 0 <= first + by and end + by <= self.max_len
        B = self.rows
        for buffers in (self.keys, self.values):
            for b in buffers:
                b[:B, :, first + by : end + by] = b[:B, :, first:end].clone()


class _Window(KVCache):
    """Views into a SlotCache's buffers (no storage of its own)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values
        self.max_len = keys[0].shape[2]

    def keep_rows(self, rows: torch.Tensor) -> None:
        raise AssertionError("a window's rows are fixed; drop rows from its SlotCache")
