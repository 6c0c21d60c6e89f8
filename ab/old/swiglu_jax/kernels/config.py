"""Block sizes: one frozen dataclass, a heuristic default per backend."""

from __future__ import annotations

import dataclasses


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """The tile each kernel instance computes: ``block_rows`` tokens by ``block_hidden``
    columns of the output (and the matching gate and linear columns of the input).

    ``num_warps``/``num_stages`` are the Triton backend's launch parameters (``None``:
    the backend's default); ``row_steps`` is the row blocks each program of its backward
    loops over, adding the bias gradient's terms in registers across them (one sum
    across warps a program instead of one a tile). Other backends ignore all three.
    """

    block_rows: int
    block_hidden: int
    num_warps: int | None = None
    num_stages: int | None = None
    row_steps: int = 1

    def __post_init__(self):
        for name in ("block_rows", "block_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("num_warps", "num_stages"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        if not isinstance(self.row_steps, int) or self.row_steps < 1:
            raise ValueError(f"row_steps must be a positive int, got {self.row_steps!r}")
