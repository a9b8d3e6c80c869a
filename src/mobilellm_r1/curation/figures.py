"""PNG figures of the curation reports, drawn on matplotlib's Agg canvas (no global backend switch)."""

from __future__ import annotations

import io
from typing import Any


def agg_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib ``Figure`` attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any, dpi: int = 120) -> bytes:
    """The figure as PNG bytes (to be written with ``atomic_write``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
