"""The two table cells every benchmark table writes: a median with its min-max range."""

from __future__ import annotations


def ratio_cell(r: dict | None) -> str:
    """A paired ratio's median and range: 1.23x (1.10-1.40)."""
    if not r:
        return "-"
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def spread_cell(r: dict | None, scale: float = 1.0, digits: int = 0) -> str:
    """A measurement's median and range, scaled: 448 (373-564)."""
    if not r:
        return "-"
    return f"{r['median'] * scale:.{digits}f} ({r['min'] * scale:.{digits}f}-{r['max'] * scale:.{digits}f})"
