"""Tiled detection for fixed-input detectors (ocr/tiling.py): planning and merging.

The plan must cover every pixel, overlap neighbours by more than a text line, map each
tile's boxes back to exactly where they are in the image, and leave ordinary images to
the single letterbox. The merge must report a region seen by two tiles once, take a
region cut by one tile's edge from the neighbour that holds it whole, and join a line
longer than the overlap.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ocr.detection import DynamicDetParams, dynamic_scale, prepare_fixed
from ocr.tiling import (
    TilePlan,
    TilingParams,
    merge_tile_boxes,
    plan_tiles,
    prepare_tile,
    single_tile,
)

MODEL_H, MODEL_W = 544, 960  # Hailo's ocr_det.hef
DET = DynamicDetParams()

SHAPES = [
    (1527, 1080),  # SROIE 030: tall receipt, the case that motivated tiling
    (2260, 963),  # long receipt
    (1000, 762),  # FUNSD form, portrait
    (122, 1672),  # one wide line, letterbox shrinks it
    (20000, 300),  # absurdly long strip: the tile cap decides the scale
    (4000, 3000),  # big portrait photo
]


def _plan(h: int, w: int, **params) -> TilePlan:
    return plan_tiles(h, w, MODEL_H, MODEL_W, DET, TilingParams(**params))


def _quad(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def _boxes(*quads: np.ndarray, score: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    if not quads:
        return np.zeros((0, 4, 2), np.float32), np.zeros((0,), np.float32)
    return np.stack(quads), np.full(len(quads), score, np.float32)


# --- planning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(720, 1280), (544, 960), (600, 800), (132, 709), (30, 700)])
def test_images_the_letterbox_serves_well_keep_one_tile(h, w):
    # Landscape photos (close to the model's shape) and small images the letterbox
    # enlarges anyway are not cut.
    plan = _plan(h, w)
    assert not plan.tiled
    (tile,) = plan.tiles
    assert (tile.x0, tile.y0, tile.x1, tile.y1) == (0, 0, w, h)
    assert tile.cut == (False, False, False, False)


@pytest.mark.parametrize("h, w", SHAPES)
def test_tiles_cover_the_image_overlap_and_their_cores_partition_it(h, w):
    params = TilingParams()
    plan = _plan(h, w)
    assert plan.tiled and 2 <= len(plan.tiles) <= params.max_tiles
    covered = np.zeros((h, w), np.int32)
    owned = np.zeros((h, w), np.int32)
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5  # pixel centres
    for t in plan.tiles:
        assert 0 <= t.x0 < t.x1 <= w and 0 <= t.y0 < t.y1 <= h
        # Each tile fits the model at the plan's scale (no second shrink in the letterbox).
        assert t.height * plan.scale <= MODEL_H + 1e-6 and t.width * plan.scale <= MODEL_W + 1e-6
        assert t.cut == (t.x0 > 0, t.y0 > 0, t.x1 < w, t.y1 < h)
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
        cx0, cy0, cx1, cy1 = t.core
        assert t.x0 <= cx0 < cx1 <= t.x1 and t.y0 <= cy0 < cy1 <= t.y1
        rows = (ys >= cy0) & (ys < cy1)
        cols = (xs >= cx0) & (xs < cx1)
        owned[np.ix_(rows, cols)] += 1
    assert covered.min() >= 1, "a part of the image is in no tile"
    assert (owned == 1).all(), "the cores must partition the image"
    # A strip along one axis; neighbours share at least the requested overlap.
    tiles = sorted(plan.tiles, key=lambda t: (t.y0, t.x0))
    along_y = len({t.y0 for t in tiles}) > 1
    assert len({t.x0 for t in tiles}) == 1 or len({t.y0 for t in tiles}) == 1
    for a, b in zip(tiles, tiles[1:], strict=False):
        shared = (a.y1 - b.y0) if along_y else (a.x1 - b.x0)
        size = a.height if along_y else a.width
        assert shared >= params.overlap * size - 1


@pytest.mark.parametrize("h, w", SHAPES)
def test_the_scale_fills_the_model_but_never_exceeds_the_cpu_path(h, w):
    plan = _plan(h, w)
    letterbox = min(MODEL_H / h, MODEL_W / w)
    assert plan.scale <= dynamic_scale(h, w, DET) + 1e-9
    assert plan.scale >= 1.5 * letterbox or len(plan.tiles) == TilingParams().max_tiles
    tall = h / w > MODEL_H / MODEL_W
    # The strip runs along the image's long axis: the other one fits one tile.
    assert all((t.x0, t.x1) == (0, w) if tall else (t.y0, t.y1) == (0, h) for t in plan.tiles)


def test_the_receipt_is_fed_at_its_width_and_a_strip_at_the_cpu_scale():
    receipt = _plan(1527, 1080)  # 1080 wide into 960: 0.889, CPU would use 1.0
    assert receipt.scale == pytest.approx(960 / 1080)
    assert len(receipt.tiles) == 3
    strip = _plan(1170, 457)  # the CPU path enlarges this receipt 1.61x, not 2.1x
    assert strip.scale == pytest.approx(dynamic_scale(1170, 457, DET))
    assert strip.scale < MODEL_W / 457


def test_too_many_tiles_fall_back_to_a_coarser_scale():
    # A CPU path that would read this 6000 px strip at full size (its default caps the
    # long side at 1600, which four tiles cover anyway).
    det = DynamicDetParams(max_side_len=8000)
    fine = plan_tiles(6000, 800, MODEL_H, MODEL_W, det, TilingParams(max_tiles=100))
    capped = plan_tiles(6000, 800, MODEL_H, MODEL_W, det, TilingParams(max_tiles=4))
    assert len(fine.tiles) > 4 and len(capped.tiles) <= 4
    assert capped.scale < fine.scale
    # No gain left over the letterbox: one tile.
    assert not _plan(1527, 1080, min_gain=10.0).tiled


def test_dynamic_scale_matches_prepare_dynamic():
    from ocr.detection import prepare_dynamic

    for h, w in [(1527, 1080), (1170, 457), (122, 1672), (30, 700), (4000, 3000), (2, 9)]:
        net, _ = prepare_dynamic(np.zeros((h, w, 3), np.uint8), DET)
        assert dynamic_scale(h, w, DET) == pytest.approx(net.shape[1] / w), (h, w)


def test_prepare_tile_maps_boxes_back_to_image_pixels():
    # A white rectangle, found on each tile's letterboxed input and mapped back, lands
    # where it was drawn, whatever the tile's offset and letterbox.
    h, w = 1527, 1080
    plan = _plan(h, w)
    img = np.zeros((h, w, 3), np.uint8)
    drawn = [(100, 40, 400, 90), (500, 560, 980, 600), (200, 1400, 700, 1480)]
    for x0, y0, x1, y1 in drawn:
        img[y0:y1, x0:x1] = 255
    found = 0
    for tile in plan.tiles:
        net, tt = prepare_tile(img, tile, MODEL_H, MODEL_W, pad_value=0)
        assert net.shape == (MODEL_H, MODEL_W, 3)
        mask = (net[..., 0] > 127).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        for x, y, bw, bh, _ in stats[1:n]:
            q = _quad(x, y, x + bw, y + bh)
            back = tt.to_image(tt.det.src_to_orig(tt.det.map_to_src(q)))
            bx0, by0 = back[:, 0].min(), back[:, 1].min()
            bx1, by1 = back[:, 0].max(), back[:, 1].max()
            # The rectangle as the tile shows it: clipped to the tile.
            want = min(
                drawn,
                key=lambda r: abs(max(r[0], tile.x0) - bx0) + abs(max(r[1], tile.y0) - by0),
            )
            exp = (max(want[0], tile.x0), max(want[1], tile.y0),
                   min(want[2], tile.x1), min(want[3], tile.y1))
            tol = 1.0 / plan.scale + 1.0  # one model pixel, plus rounding
            assert abs(bx0 - exp[0]) <= tol and abs(by0 - exp[1]) <= tol, (back, exp)
            assert abs(bx1 - exp[2]) <= tol and abs(by1 - exp[3]) <= tol, (back, exp)
            found += 1
    assert found >= len(drawn)


def test_prepare_tile_is_prepare_fixed_on_the_crop():
    img = np.random.default_rng(1).integers(0, 255, (1527, 1080, 3), dtype=np.uint8)
    plan = _plan(*img.shape[:2])
    tile = plan.tiles[1]
    net, tt = prepare_tile(img, tile, MODEL_H, MODEL_W, pad_value=114)
    ref, det = prepare_fixed(img[tile.y0 : tile.y1, tile.x0 : tile.x1], MODEL_H, MODEL_W,
                             pad_value=114)
    assert np.array_equal(net, ref)
    assert (tt.offset_x, tt.offset_y) == (tile.x0, tile.y0)
    # Both transforms take a map point to the same crop pixel.
    pts = np.array([[0, 0], [959, 543], [480, 272], [17.5, 300.25]], np.float32)
    a = det.src_to_orig(pts)  # prepare_fixed's src is the canvas itself
    b = tt.det.src_to_orig(tt.det.map_to_src(pts))
    assert np.abs(a - b).max() <= 1.0


def test_plan_rejects_empty_sizes():
    with pytest.raises(ValueError):
        plan_tiles(0, 10, MODEL_H, MODEL_W, DET)


# --- merging ----------------------------------------------------------------------------------


def _tall_plan() -> TilePlan:
    plan = _plan(1527, 1080)
    assert len(plan.tiles) == 3
    return plan


def test_a_box_in_the_overlap_is_reported_once():
    plan = _tall_plan()
    a, b = plan.tiles[0], plan.tiles[1]
    y = (a.y1 + b.y0) / 2  # the middle of the overlap
    line = _quad(100, y - 12, 600, y + 12)
    jitter = line + np.float32([1, -1])  # the neighbour's map rounds a little differently
    merged, scores = merge_tile_boxes(plan, [_boxes(line), _boxes(jitter), _boxes()])
    assert len(merged) == 1 and len(scores) == 1
    assert np.abs(merged[0] - line).max() <= 1.0


def test_a_box_cut_by_a_seam_is_taken_whole_from_the_neighbour():
    plan = _tall_plan()
    a, b = plan.tiles[0], plan.tiles[1]
    whole = _quad(300, a.y1 - 15, 700, a.y1 + 15)  # straddles tile 0's bottom edge
    # What tile 0 sees: clipped at its edge, and (a partial blob) a little off.
    cut = _quad(294, a.y1 - 17, 706, a.y1)
    other = _quad(50, a.y0 + 100, 500, a.y0 + 130)  # ordinary text in tile 0 only
    assert b.y0 < whole[0, 1] and whole[2, 1] < b.y1
    merged, _ = merge_tile_boxes(plan, [_boxes(cut, other), _boxes(whole), _boxes()])
    assert len(merged) == 2
    got = sorted(merged.tolist(), key=lambda q: q[0][1])
    assert np.allclose(got[0], other) and np.allclose(got[1], whole)  # not cut's edges


def test_two_neighbouring_lines_in_the_overlap_stay_two():
    plan = _tall_plan()
    b = plan.tiles[1]
    y = b.y0 + 20
    l1, l2 = _quad(100, y, 600, y + 22), _quad(100, y + 24, 600, y + 46)
    merged, _ = merge_tile_boxes(plan, [_boxes(l1, l2), _boxes(l1, l2), _boxes()])
    assert len(merged) == 2
    assert {round(float(q[0, 1])) for q in merged} == {round(y), round(y + 24)}


def test_a_line_longer_than_the_overlap_is_joined_across_the_seam():
    plan = _plan(122, 1672)  # a wide line: tiles side by side
    assert plan.tiled
    t0, t1 = plan.tiles[0], plan.tiles[1]
    assert t1.x0 < t0.x1
    # The line runs from x=20 to x=t1.x1 - 50: neither tile holds it whole.
    left = _quad(20, 30, t0.x1, 90)
    right = _quad(t1.x0, 31, t1.x1 - 50, 89)
    merged, scores = merge_tile_boxes(
        plan, [_boxes(left), _boxes(right)] + [_boxes()] * (len(plan.tiles) - 2)
    )
    assert len(merged) == 1 and len(scores) == 1
    q = merged[0]
    assert q[:, 0].min() == pytest.approx(20, abs=1)
    assert q[:, 0].max() == pytest.approx(t1.x1 - 50, abs=1)
    assert 29 <= q[:, 1].min() <= 31 and 89 <= q[:, 1].max() <= 91


def test_a_fragment_joins_the_part_the_next_tile_sees_whole():
    # The neighbour's window starts in a gap between words: it sees the rest of the line
    # whole, while this tile has the line cut at its edge. One line, not two.
    plan = _plan(122, 1672)
    t0, t1 = plan.tiles[0], plan.tiles[1]
    left = _quad(20, 30, t0.x1, 90)
    rest = _quad(t1.x0 + 10, 30, t1.x1 - 40, 90)
    merged, _ = merge_tile_boxes(
        plan, [_boxes(left), _boxes(rest)] + [_boxes()] * (len(plan.tiles) - 2)
    )
    assert len(merged) == 1
    assert merged[0][:, 0].min() == pytest.approx(20, abs=1)
    assert merged[0][:, 0].max() == pytest.approx(t1.x1 - 40, abs=1)


def test_a_single_tile_merge_keeps_every_box():
    plan = single_tile(720, 1280, 0.75)
    quads = [_quad(10 * i, 5 * i, 10 * i + 8, 5 * i + 4) for i in range(1, 6)]
    merged, scores = merge_tile_boxes(plan, [_boxes(*quads)])
    assert len(merged) == 5 and scores.tolist() == pytest.approx([0.9] * 5)


def test_merge_needs_one_result_per_tile():
    with pytest.raises(ValueError):
        merge_tile_boxes(_tall_plan(), [_boxes()])
