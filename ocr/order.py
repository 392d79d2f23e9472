"""Reading order: regions grouped into lines by vertical overlap, lines top to bottom,
regions in a line left to right. A line's text joins its regions with spaces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def reading_order(quads: Sequence[np.ndarray], min_overlap: float = 0.5) -> list[list[int]]:
    """Group region indices into lines, each line's indices left to right.

    A region joins a line when its vertical extent overlaps the line's by at least
    ``min_overlap`` of the shorter of the two heights. Regions are visited top to bottom
    by their centre, so a line's extent is that of the regions already in it.
    """
    if len(quads) == 0:
        return []
    arr = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
    tops = arr[:, :, 1].min(axis=1)
    bottoms = arr[:, :, 1].max(axis=1)
    lefts = arr[:, :, 0].min(axis=1)
    centres = (tops + bottoms) / 2
    lines: list[tuple[float, float, list[int]]] = []  # (top, bottom, members)
    for i in np.argsort(centres, kind="stable"):
        h = max(bottoms[i] - tops[i], 1e-6)
        placed = False
        for n, (top, bottom, members) in enumerate(lines):
            overlap = min(bottom, bottoms[i]) - max(top, tops[i])
            if overlap >= min_overlap * min(h, bottom - top):
                members.append(int(i))
                lines[n] = (min(top, tops[i]), max(bottom, bottoms[i]), members)
                placed = True
                break
        if not placed:
            lines.append((float(tops[i]), float(bottoms[i]), [int(i)]))
    lines.sort(key=lambda line: (line[0] + line[1]) / 2)
    return [sorted(members, key=lambda j: lefts[j]) for _, _, members in lines]


def line_texts(texts: Sequence[str], lines: Sequence[Sequence[int]]) -> list[str]:
    """The text of each line in reading order, its regions joined by spaces; lines with
    no text are left out."""
    joined = (" ".join(texts[i] for i in line if texts[i]) for line in lines)
    return [line for line in joined if line]
