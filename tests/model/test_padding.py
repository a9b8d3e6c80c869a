"""The one padding helper: right and left padding, the width rule, bad sides refused."""

from __future__ import annotations

import pytest
import torch

from mobilellm_r1.model.padding import pad_rows


def test_right_and_left_padding() -> None:
    rows = [[5, 6, 7], [8], []]
    assert pad_rows(rows, 0).tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert pad_rows(rows, -1, side="left").tolist() == [[5, 6, 7], [-1, -1, 8], [-1, -1, -1]]
    assert pad_rows(rows, 0).dtype == torch.long


def test_width_is_at_least_one_and_side_is_checked() -> None:
    assert pad_rows([[], []], 9).tolist() == [[9], [9]]
    with pytest.raises(ValueError, match="padding side must be 'right' or 'left', got 'up'"):
        pad_rows([[1]], 0, side="up")
