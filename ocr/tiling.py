"""Tiled detection for fixed-input detectors (compiled NPU models).

A compiled detector has one input size, e.g. 544 x 960 (landscape). Letterboxing a tall
receipt into it shrinks the whole page until its height fits: a 1527 x 1080 receipt
becomes 544 x 385, its 20-pixel text 7 pixels high, and DB finds a handful of regions
where the CPU backend (which feeds the page at full size) finds forty.

So when the image's shape is far from the model's, the image is cut into overlapping
tiles instead, each the model's shape at about the scale the CPU path would use:

* **Scale.** The image is scaled so that it fills the model along its limiting axis (a
  tall image's width becomes the model's width, a wide image's height the model's
  height), but never larger than the dynamic (CPU) path would make it, and coarser when
  more than ``max_tiles`` tiles would be needed. Tiles are then a strip along one axis.
* **Overlap.** Neighbouring tiles share ``overlap`` of a tile (20 %: 109 model pixels of
  a 544-pixel tile, several text lines), so any line cut by one tile's edge lies whole
  in its neighbour.
* **Mapping back.** Each tile is a crop of the original image, letterboxed with
  :func:`ocr.detection.prepare_fixed`; its :class:`~ocr.geometry.DetTransform` maps the
  tile's boxes to the crop and the tile's offset moves them into the image, so no
  second resize or rounding stage is involved.
* **Merging** (:func:`merge_tile_boxes`). A box touching a tile edge that is a cut (not
  the image border) is a fragment: dropped when another tile holds the same text whole,
  joined with its continuation when the text is longer than the overlap (a long line in
  a wide image), kept as it is otherwise. Duplicates of one region seen whole by two
  tiles are reduced to one, preferring the tile whose *core* (the tiles' partition of
  the image, cut in the middle of each overlap) holds the box centre.

When the shapes are close enough (a landscape photo into a landscape model), the
single letterbox stays: :func:`plan_tiles` returns one tile covering the image, which
the caller letterboxes into the model's input whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import cv2
import numpy as np

from .detection import DynamicDetParams, dynamic_scale, prepare_fixed
from .geometry import DetTransform, order_clockwise


@attrs.frozen
class TilingParams:
    """How eagerly to tile; the defaults are measured on SROIE receipts (README)."""

    #: Tile only when tiles show the text at least this many times larger than one
    #: letterbox would. Below that the extra device jobs buy too little.
    min_gain: float = 1.5
    #: Fraction of a tile shared with each neighbour; must exceed a tall text line.
    overlap: float = 0.2
    #: Most tiles per image (device jobs per request); past it the scale gets coarser.
    max_tiles: int = 8
    #: Tile only when the letterbox would shrink the image below this scale. An image
    #: letterboxed at its own size or larger keeps its text as legible as it is, and
    #: tiles would only add seams across its lines (a wide image's lines run across
    #: the cuts) and device jobs.
    max_letterbox_scale: float = 1.0


@attrs.frozen
class Tile:
    """One tile: a region of the original image and the part of it this tile owns.

    ``x0, y0, x1, y1``: the crop, in original-image pixels (end exclusive).
    ``core``: this tile's share of the image (the tiles' cores partition it), as
    ``(x0, y0, x1, y1)`` floats. ``cut``: for the left, top, right and bottom edges,
    whether that edge is a cut through the image (True) or the image border (False).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    core: tuple[float, float, float, float]
    cut: tuple[bool, bool, bool, bool]

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@attrs.frozen
class TilePlan:
    """The tiles for one image, and the scale they are fed to the model at."""

    image_h: int
    image_w: int
    scale: float  # model pixels per image pixel (about; each tile's letterbox rounds)
    tiles: tuple[Tile, ...]

    @property
    def tiled(self) -> bool:
        return len(self.tiles) > 1


@attrs.frozen
class TileTransform:
    """A tile's letterbox transform composed with its offset in the original image."""

    det: DetTransform  # model map -> tile crop pixels
    offset_x: int
    offset_y: int

    def to_image(self, quads: np.ndarray) -> np.ndarray:
        """Move quads from tile-crop pixels to original-image pixels."""
        out = np.array(quads, dtype=np.float32, copy=True)
        out[..., 0] += self.offset_x
        out[..., 1] += self.offset_y
        return out


def _spans(length: int, tile: int, overlap: float) -> list[tuple[int, int]]:
    """Evenly spaced ``[start, end)`` windows of ``tile`` covering ``length``, neighbours
    sharing at least ``overlap * tile``."""
    if tile >= length:
        return [(0, length)]
    shared = overlap * tile
    n = math.ceil((length - shared) / (tile - shared))
    n = max(n, 2)
    starts = [round(i * (length - tile) / (n - 1)) for i in range(n)]
    return [(s, s + tile) for s in starts]


def _cores(spans: list[tuple[int, int]], length: int) -> list[tuple[float, float]]:
    """Split each overlap in the middle: the windows' shares partition ``[0, length)``."""
    cuts = [(spans[i][1] + spans[i + 1][0]) / 2 for i in range(len(spans) - 1)]
    bounds = [0.0, *cuts, float(length)]
    return [(bounds[i], bounds[i + 1]) for i in range(len(spans))]


def _count(h: int, w: int, model_h: int, model_w: int, scale: float, overlap: float) -> int:
    th, tw = _tile_size(h, w, model_h, model_w, scale)
    return len(_spans(h, th, overlap)) * len(_spans(w, tw, overlap))


def _tile_size(h: int, w: int, model_h: int, model_w: int, scale: float) -> tuple[int, int]:
    return min(h, max(1, int(model_h / scale))), min(w, max(1, int(model_w / scale)))


def single_tile(h: int, w: int, scale: float) -> TilePlan:
    """The plan that is one letterbox of the whole image (the untiled path)."""
    tile = Tile(0, 0, w, h, (0.0, 0.0, float(w), float(h)), (False, False, False, False))
    return TilePlan(image_h=h, image_w=w, scale=scale, tiles=(tile,))


def plan_tiles(
    h: int, w: int, model_h: int, model_w: int, det: DynamicDetParams,
    params: TilingParams = TilingParams(),
) -> TilePlan:
    """Plan the tiles for an ``h`` x ``w`` image and a ``model_h`` x ``model_w`` detector.

    See the module docstring. One tile (the whole image, letterboxed) unless
    tiles would show the text ``params.min_gain`` times larger than the letterbox."""
    if h < 1 or w < 1 or model_h < 1 or model_w < 1:
        raise ValueError(f"empty image or model: {h}x{w} into {model_h}x{model_w}")
    letterbox = min(model_h / h, model_w / w)
    taller = h * model_w >= w * model_h  # taller (relative to its width) than the model
    fill = model_w / w if taller else model_h / h
    scale = min(fill, dynamic_scale(h, w, det))
    if letterbox >= params.max_letterbox_scale or scale < letterbox * params.min_gain:
        return single_tile(h, w, letterbox)
    # Too many tiles: coarser, down to the scale at which max_tiles suffice.
    while _count(h, w, model_h, model_w, scale, params.overlap) > params.max_tiles:
        scale *= 0.95
        if scale <= letterbox:
            return single_tile(h, w, letterbox)
    th, tw = _tile_size(h, w, model_h, model_w, scale)
    ys, xs = _spans(h, th, params.overlap), _spans(w, tw, params.overlap)
    if len(ys) * len(xs) == 1:
        return single_tile(h, w, letterbox)
    cy, cx = _cores(ys, h), _cores(xs, w)
    tiles = tuple(
        Tile(
            x0=x0, y0=y0, x1=x1, y1=y1, core=(cx[j][0], cy[i][0], cx[j][1], cy[i][1]),
            cut=(x0 > 0, y0 > 0, x1 < w, y1 < h),
        )
        for i, (y0, y1) in enumerate(ys)
        for j, (x0, x1) in enumerate(xs)
    )
    return TilePlan(image_h=h, image_w=w, scale=scale, tiles=tiles)


def prepare_tile(
    img: np.ndarray, tile: Tile, model_h: int, model_w: int, *, pad_value: int = 114
) -> tuple[np.ndarray, TileTransform]:
    """Letterbox one tile of ``img`` into the model; the transform maps back to ``img``."""
    crop = img[tile.y0 : tile.y1, tile.x0 : tile.x1]
    net, fixed = prepare_fixed(crop, model_h, model_w, pad_value=pad_value)
    # The same mapping, with the intermediate "source" in crop pixels rather than model
    # pixels: DB rounds box corners to whole source pixels, and whole *image* pixels are
    # what the dynamic path rounds to (the recogniser is sensitive to a pixel or two of
    # box height on small text).
    rw, rh = fixed.ratio_w, fixed.ratio_h
    det = DetTransform(
        map_w=model_w, map_h=model_h, src_w=round(model_w * rw), src_h=round(model_h * rh),
        pad_left=fixed.pad_left * rw, pad_top=fixed.pad_top * rh, ratio_w=1.0, ratio_h=1.0,
        orig_w=fixed.orig_w, orig_h=fixed.orig_h,
    )
    return net, TileTransform(det=det, offset_x=tile.x0, offset_y=tile.y0)


# --- merging ---------------------------------------------------------------------------


@attrs.define
class _Box:
    quad: np.ndarray  # (4, 2) original-image pixels
    score: float
    tile: int
    cut: bool  # touches an edge of its tile that is a cut through the image
    in_core: bool  # its centre lies in its own tile's core
    aabb: tuple[float, float, float, float]
    area: float


def _hull(quad: np.ndarray) -> np.ndarray:
    return cv2.convexHull(np.asarray(quad, dtype=np.float32).reshape(-1, 1, 2))


def _area(quad: np.ndarray) -> float:
    return float(cv2.contourArea(_hull(quad)))


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    area, _ = cv2.intersectConvexConvex(_hull(a), _hull(b))
    return max(0.0, float(area))


def _aabb_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def _touches_cut(quad: np.ndarray, tile: Tile, eps: float) -> bool:
    xs, ys = quad[:, 0], quad[:, 1]
    left, top, right, bottom = tile.cut
    return bool(
        (left and xs.min() <= tile.x0 + eps) or (top and ys.min() <= tile.y0 + eps)
        or (right and xs.max() >= tile.x1 - eps) or (bottom and ys.max() >= tile.y1 - eps)
    )


def _join(quads: Sequence[np.ndarray]) -> np.ndarray:
    """The minimum-area quad around several fragments of one region."""
    pts = np.concatenate([np.asarray(q, dtype=np.float32).reshape(-1, 2) for q in quads])
    box = cv2.boxPoints(cv2.minAreaRect(pts))
    return order_clockwise(np.round(box))  # whole pixels, as DB's own boxes


def merge_tile_boxes(
    plan: TilePlan, per_tile: Sequence[tuple[np.ndarray, np.ndarray]],
    *, dup_iou: float = 0.5, dup_cover: float = 0.8, whole_cover: float = 0.5,
    join_cover: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge each tile's ``(quads, scores)`` (original-image pixels) into one set.

    1. A box touching one of its tile's cut edges is a fragment. It is dropped when a
       box from another tile, touching no cut, covers at least ``whole_cover`` of it
       (the neighbour saw the region whole).
    2. A remaining fragment and a box of another tile (fragment or whole) that overlap
       inside the area their tiles share (by ``join_cover`` of the smaller one's part
       there) are one region longer than the overlap (a long line across the seams of a
       wide image): joined into their minimum-area quad.
    3. Duplicates (IoU >= ``dup_iou``, or one covering ``dup_cover`` of the other) are
       reduced to one: the box whose centre is in its own tile's core first, then the
       one not cut, then the larger, then the higher score.

    Returns ``(quads (N, 4, 2) float32, scores (N,) float32)`` sorted top to bottom,
    left to right.
    """
    if len(per_tile) != len(plan.tiles):
        raise ValueError(f"{len(per_tile)} tile results for {len(plan.tiles)} tiles")
    eps = 2.0 / max(plan.scale, 1e-6) + 1.0  # two model pixels, plus DB's rounding
    boxes: list[_Box] = []
    for t, (tile, (quads, scores)) in enumerate(zip(plan.tiles, per_tile, strict=True)):
        for quad, score in zip(np.asarray(quads, np.float32), np.asarray(scores), strict=True):
            cx, cy = float(quad[:, 0].mean()), float(quad[:, 1].mean())
            c = tile.core
            in_core = c[0] <= cx < c[2] and c[1] <= cy < c[3]
            aabb = (float(quad[:, 0].min()), float(quad[:, 1].min()),
                    float(quad[:, 0].max()), float(quad[:, 1].max()))
            boxes.append(_Box(quad, float(score), t, _touches_cut(quad, tile, eps), in_core,
                              aabb, _area(quad)))

    whole = [b for b in boxes if not b.cut]
    fragments = [
        f for f in boxes if f.cut and not any(
            w.tile != f.tile and _aabb_overlap(w.aabb, f.aabb)
            and _intersection(w.quad, f.quad) >= whole_cover * max(f.area, 1e-6)
            for w in whole
        )
    ]
    merged = _join_fragments(plan, whole, fragments, join_cover)

    order = sorted(
        range(len(merged)),
        key=lambda i: (not merged[i].in_core, merged[i].cut, -merged[i].area, -merged[i].score),
    )
    kept: list[_Box] = []
    for i in order:
        b = merged[i]
        duplicate = False
        for k in kept:
            if not _aabb_overlap(b.aabb, k.aabb):
                continue
            inter = _intersection(b.quad, k.quad)
            union = b.area + k.area - inter
            if (union > 0 and inter / union >= dup_iou) or (
                inter >= dup_cover * max(min(b.area, k.area), 1e-6)
            ):
                duplicate = True
                break
        if not duplicate:
            kept.append(b)
    if not kept:
        return np.zeros((0, 4, 2), dtype=np.float32), np.zeros((0,), dtype=np.float32)
    kept.sort(key=lambda b: (round(b.aabb[1]), b.aabb[0]))
    quads = np.stack([b.quad for b in kept]).astype(np.float32)
    quads[..., 0] = np.clip(quads[..., 0], 0, plan.image_w)
    quads[..., 1] = np.clip(quads[..., 1], 0, plan.image_h)
    return quads, np.asarray([b.score for b in kept], dtype=np.float32)


def _join_fragments(
    plan: TilePlan, whole: list[_Box], fragments: list[_Box], join_cover: float
) -> list[_Box]:
    """Step 2 of :func:`merge_tile_boxes`: all boxes, with each fragment joined to the
    pieces of its region that neighbouring tiles saw."""
    boxes = whole + fragments
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(whole), len(boxes)):  # every pair with at least one fragment
        a = boxes[i]
        for j in range(len(boxes)):
            b = boxes[j]
            if j == i or a.tile == b.tile:
                continue
            if not _aabb_overlap(a.aabb, b.aabb) or root(i) == root(j):
                continue
            ta, tb = plan.tiles[a.tile], plan.tiles[b.tile]
            shared = (max(ta.x0, tb.x0), max(ta.y0, tb.y0), min(ta.x1, tb.x1), min(ta.y1, tb.y1))
            if shared[0] >= shared[2] or shared[1] >= shared[3]:
                continue
            region = _rect(*shared)
            part_a, part_b = _intersection(a.quad, region), _intersection(b.quad, region)
            if min(part_a, part_b) <= 0:
                continue
            if _intersection(a.quad, b.quad) >= join_cover * min(part_a, part_b):
                parent[root(i)] = root(j)

    groups: dict[int, list[_Box]] = {}
    for i, box in enumerate(boxes):
        groups.setdefault(root(i), []).append(box)
    out: list[_Box] = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        quad = _join([m.quad for m in members])
        aabb = (float(quad[:, 0].min()), float(quad[:, 1].min()),
                float(quad[:, 0].max()), float(quad[:, 1].max()))
        out.append(_Box(quad, max(m.score for m in members), members[0].tile, False,
                        any(m.in_core for m in members), aabb, _area(quad)))
    return out
