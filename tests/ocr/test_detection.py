"""ocr.detection, ocr.dbpost, ocr.crop and ocr.geometry: sizes, transforms, synthetic maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ocr.crop import VERTICAL_ASPECT, crop_quad, rotate_180
from ocr.dbpost import DbParams, db_boxes
from ocr.detection import (
    DynamicDetParams,
    prepare_dynamic,
    prepare_fixed,
    to_nchw_normalised,
    to_nhwc_rgb_uint8,
)
from ocr.geometry import DetTransform, order_clockwise, order_clockwise_many, quad_size

# ------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize(
    ("h", "w"),
    [(720, 1280), (30, 700), (11, 65), (1, 1), (2260, 963), (20, 20000), (1000, 762), (48, 136)],
)
def test_dynamic_sides_are_multiples_of_32_within_limits(h, w):
    params = DynamicDetParams()
    img = np.zeros((h, w, 3), dtype=np.uint8)
    net, t = prepare_dynamic(img, params)
    nh, nw = net.shape[:2]
    assert nh % 32 == 0 and nw % 32 == 0 and nh >= 32 and nw >= 32
    assert (t.map_h, t.map_w) == (nh, nw) and (t.orig_h, t.orig_w) == (h, w)
    # the input never exceeds the long-side cap (plus the rounding to 32); the source is
    # the original image (padded), never rescaled before the network's own resize
    assert max(nh, nw) <= params.max_side_len + 16
    assert (t.src_h - 2 * t.pad_top, t.src_w) == (h, w) and (t.ratio_h, t.ratio_w) == (1, 1)


def test_dynamic_scales_short_side_up_to_limit():
    net, t = prepare_dynamic(np.zeros((300, 400, 3), np.uint8), DynamicDetParams())
    assert net.shape[:2] == (704, 928)  # 704 / 300 * 400 = 938.7 -> 928
    assert t.pad_top == 0


def test_dynamic_caps_the_long_side_after_scaling_up():
    # a receipt: the short side is not scaled up past what keeps the long side at 1600
    net, _ = prepare_dynamic(np.zeros((1170, 457, 3), np.uint8), DynamicDetParams())
    assert net.shape[:2] == (1600, 640)  # 1600 / 1170 * 457 = 625 -> 640
    # a photo that already fits is only rounded to multiples of 32
    net, _ = prepare_dynamic(np.zeros((720, 1280, 3), np.uint8), DynamicDetParams())
    assert net.shape[:2] == (704, 1280)
    # a large scan is scaled down to the cap
    net, _ = prepare_dynamic(np.zeros((2160, 932, 3), np.uint8), DynamicDetParams())
    assert net.shape[:2] == (1600, 704)


def test_dynamic_max_limit_type_caps_the_long_side():
    params = DynamicDetParams(limit_side_len=960, limit_type="max")
    net, _ = prepare_dynamic(np.zeros((1000, 1500, 3), np.uint8), params)
    assert max(net.shape[:2]) <= 960 + 16


def test_dynamic_pads_wide_images_vertically_and_maps_back():
    img = np.zeros((30, 700, 3), np.uint8)
    net, t = prepare_dynamic(img, DynamicDetParams())
    assert t.pad_top > 0 and t.src_h == 30 + 2 * t.pad_top
    # a point on the map maps back into the original image's frame
    map_pt = np.array([[t.map_w / 2, t.map_h / 2]], np.float32)
    orig = t.src_to_orig(t.map_to_src(map_pt))
    assert abs(orig[0, 0] - 350) <= 1 and abs(orig[0, 1] - 15) <= 1


@pytest.mark.parametrize(("h", "w"), [(720, 1280), (1280, 720), (100, 100), (30, 2000)])
def test_fixed_letterbox_keeps_aspect_and_maps_back(h, w):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    net, t = prepare_fixed(img, 544, 960, pad_value=114)
    assert net.shape == (544, 960, 3)
    new_w, new_h = round(w / t.ratio_w), round(h / t.ratio_h)
    assert abs(new_w / new_h - w / h) < 0.05 * (w / h) + 2 / min(new_w, new_h)
    # the padding is the pad value, the image is centred
    if t.pad_top >= 1:
        assert (net[0] == 114).all() and (net[-1] == 114).all()
    if t.pad_left >= 1:
        assert (net[:, 0] == 114).all() and (net[:, -1] == 114).all()
    # corners of the letterboxed content map back to the original corners
    corners = np.array(
        [[t.pad_left, t.pad_top], [t.pad_left + new_w, t.pad_top + new_h]], np.float32
    )
    back = t.src_to_orig(t.map_to_src(corners))
    assert np.allclose(back, [[0, 0], [w, h]], atol=max(w, h) / 500 + 2)


def test_tensor_layouts():
    img = np.full((32, 64, 3), 255, np.uint8)
    img[..., 0] = 0  # blue channel 0 in BGR
    nchw = to_nchw_normalised(img)
    assert nchw.shape == (1, 3, 32, 64) and nchw.dtype == np.float32
    assert nchw[0, 0].max() == -1.0 and nchw[0, 1].min() == 1.0
    nhwc = to_nhwc_rgb_uint8([img, img])
    assert nhwc.shape == (2, 32, 64, 3) and nhwc.dtype == np.uint8
    assert (nhwc[..., 2] == 0).all() and (nhwc[..., 0] == 255).all()  # BGR -> RGB


def test_nhwc_frames_are_the_images_with_channels_reversed():
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8) for _ in range(3)]
    view = rng.integers(0, 256, (37, 80, 3), dtype=np.uint8)[:, 10:63]  # not contiguous
    for given in (imgs, imgs[0], [view]):
        want = np.stack(given if isinstance(given, list) else [given])[..., ::-1]
        got = to_nhwc_rgb_uint8(given)
        assert got.flags.c_contiguous and np.array_equal(got, want)


# ------------------------------------------------------------------ DB post-processing


def _identity(h: int, w: int) -> DetTransform:
    return DetTransform(
        map_w=w, map_h=h, src_w=w, src_h=h, pad_left=0.0, pad_top=0.0,
        ratio_w=1.0, ratio_h=1.0, orig_w=w, orig_h=h,
    )


def _map_with(rects, h=200, w=400, value=0.9) -> np.ndarray:
    prob = np.zeros((h, w), np.float32)
    for x0, y0, x1, y1 in rects:
        prob[y0:y1, x0:x1] = value
    return prob


def test_one_rectangle_gives_one_unclipped_clockwise_quad():
    prob = _map_with([(100, 80, 300, 100)])
    quads, scores = db_boxes(prob, _identity(200, 400))
    assert quads.shape == (1, 4, 2) and scores.shape == (1,)
    # the 2x2 dilation adds a row and a column of zeros inside the scored box: 200x20 of
    # 0.9 in a 201x21 box
    assert scores[0] == pytest.approx(0.9 * 200 * 20 / (201 * 21), abs=1e-3)
    q = quads[0]
    # unclip grows the 200 x 20 kernel by area * 1.6 / perimeter = 14.5 px on each side
    assert q[:, 0].min() == pytest.approx(100 - 14.5, abs=3)
    assert q[:, 0].max() == pytest.approx(300 + 14.5, abs=3)
    assert q[:, 1].min() == pytest.approx(80 - 14.5, abs=3)
    assert q[:, 1].max() == pytest.approx(100 + 14.5, abs=3)
    # clockwise from top-left: TL, TR, BR, BL
    assert q[0, 0] < q[1, 0] and q[0, 1] < q[3, 1] and q[2, 0] > q[3, 0] and q[2, 1] > q[1, 1]


def test_unclip_ratio_controls_growth():
    prob = _map_with([(100, 80, 300, 100)])
    small = db_boxes(prob, _identity(200, 400), DbParams(unclip_ratio=1.0))[0][0]
    large = db_boxes(prob, _identity(200, 400), DbParams(unclip_ratio=2.5))[0][0]
    assert np.ptp(large[:, 1]) > np.ptp(small[:, 1]) + 5


def test_thresholds_filter_pixels_and_boxes():
    prob = _map_with([(50, 50, 150, 70)], value=0.45)
    assert len(db_boxes(prob, _identity(200, 400))[0]) == 0  # mean 0.45 < box_thresh 0.5
    assert len(db_boxes(prob, _identity(200, 400), DbParams(box_thresh=0.4))[0]) == 1
    assert len(db_boxes(prob, _identity(200, 400), DbParams(thresh=0.5))[0]) == 0


def test_specks_are_dropped_and_empty_map_is_empty():
    prob = _map_with([(10, 10, 12, 12)])
    quads, scores = db_boxes(prob, _identity(200, 400))
    assert quads.shape == (0, 4, 2) and scores.shape == (0,)
    assert db_boxes(np.zeros((64, 64), np.float32), _identity(64, 64))[0].shape == (0, 4, 2)


def test_several_regions_and_max_candidates():
    rects = [(20, 20, 120, 40), (200, 20, 380, 40), (20, 120, 380, 150)]
    quads, _ = db_boxes(_map_with(rects), _identity(200, 400))
    assert len(quads) == 3
    centres = sorted((float(q[:, 0].mean()), float(q[:, 1].mean())) for q in quads)
    assert centres[0] == pytest.approx((70, 30), abs=2)
    assert len(db_boxes(_map_with(rects), _identity(200, 400), DbParams(max_candidates=1))[0]) == 1


def test_rotated_region_gives_a_rotated_quad():
    prob = np.zeros((300, 300), np.float32)
    rect = ((150, 150), (200, 24), 20.0)  # 20 degrees
    cv2.fillPoly(prob, [cv2.boxPoints(rect).astype(np.int32)], 0.95)
    quads, _ = db_boxes(prob, _identity(300, 300))
    assert len(quads) == 1
    q = quads[0]
    angle = np.degrees(np.arctan2(q[1, 1] - q[0, 1], q[1, 0] - q[0, 0]))
    assert abs(angle - 20) < 3


def test_boxes_come_back_in_original_pixels():
    # a 1000 x 2000 original seen as a 200 x 400 map: every coordinate x5
    prob = _map_with([(100, 80, 300, 100)])
    t = DetTransform(
        map_w=400, map_h=200, src_w=2000, src_h=1000, pad_left=0.0, pad_top=0.0,
        ratio_w=1.0, ratio_h=1.0, orig_w=2000, orig_h=1000,
    )
    q = db_boxes(prob, t)[0][0]
    assert q[:, 0].min() == pytest.approx(5 * (100 - 14.5), abs=15)
    assert q[:, 1].max() == pytest.approx(5 * (100 + 14.5), abs=15)
    assert (q[:, 0] <= 2000).all() and (q[:, 1] <= 1000).all() and (q >= 0).all()


def test_padding_and_ratio_are_undone():
    # source padded by 50 rows on top and scaled by 2 from the original
    prob = _map_with([(100, 80, 300, 100)])
    t = DetTransform(
        map_w=400, map_h=200, src_w=400, src_h=200, pad_left=0.0, pad_top=50.0,
        ratio_w=2.0, ratio_h=2.0, orig_w=800, orig_h=200,
    )
    q = db_boxes(prob, t)[0][0]
    assert q[:, 1].min() == pytest.approx((80 - 14.5 - 50) * 2, abs=6)
    assert q[:, 0].min() == pytest.approx((100 - 14.5) * 2, abs=6)


def test_bad_map_shape_is_refused():
    with pytest.raises(ValueError):
        db_boxes(np.zeros((1, 10, 10), np.float32), _identity(10, 10))


# ------------------------------------------------------------------ geometry and crops


def test_order_clockwise_from_any_order():
    pts = np.array([[10, 30], [50, 10], [10, 10], [50, 30]], np.float32)
    assert order_clockwise(pts).tolist() == [[10, 10], [50, 10], [50, 30], [10, 30]]
    assert quad_size(order_clockwise(pts)) == (40, 20)


def test_order_clockwise_many_orders_each_quad_as_order_clockwise_does():
    # Small integer coordinates: many ties in x and y, where a stable sort matters.
    quads = np.random.default_rng(5).integers(0, 6, (3000, 4, 2)).astype(np.float32)
    many = order_clockwise_many(quads)
    assert many.shape == quads.shape and many.dtype == np.float32
    for quad, got in zip(quads, many, strict=True):
        assert np.array_equal(got, order_clockwise(quad))


def test_crop_warps_a_quad_to_an_upright_rectangle():
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:40, 30:130] = 255
    quad = np.array([[30, 20], [130, 20], [130, 40], [30, 40]], np.float32)
    crop = crop_quad(img, quad)
    assert crop.shape == (20, 100, 3)
    assert crop[2:-2, 2:-2].min() > 200


def test_crop_of_a_rotated_quad_is_straightened():
    img = np.zeros((300, 300, 3), np.uint8)
    rect = ((150, 150), (160, 30), 30.0)
    box = cv2.boxPoints(rect)
    cv2.fillPoly(img, [box.astype(np.int32)], (255, 255, 255))
    crop = crop_quad(img, order_clockwise(box))
    assert abs(crop.shape[1] - 160) <= 2 and abs(crop.shape[0] - 30) <= 2
    assert crop[3:-3, 3:-3].mean() > 240


def test_tall_crops_are_rotated_to_read_left_to_right():
    img = np.zeros((300, 100, 3), np.uint8)
    img[10:20, 10:40] = (0, 0, 255)  # a mark at the top of the vertical line
    quad = np.array([[10, 10], [40, 10], [40, 250], [10, 250]], np.float32)
    crop = crop_quad(img, quad)
    assert crop.shape[1] > crop.shape[0]  # turned a quarter
    assert crop.shape[:2] == (30, 240)
    assert 240 / 30 >= VERTICAL_ASPECT
    # np.rot90 turns counter-clockwise: the top of the line ends up on the left
    assert crop[:, :10, 2].mean() > 200


def test_rotate_180():
    crop = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert np.array_equal(rotate_180(rotate_180(crop)), crop)
    assert np.array_equal(rotate_180(crop)[0, 0], crop[-1, -1])


def test_dynamic_max_pixels_scales_a_wide_line_down():
    # a 132 x 709 line: its short side is scaled up to 736, a 736 x 3968 network input
    # (2.9 Mpx) unless max_pixels bounds it; the aspect ratio is kept either way
    img = np.zeros((132, 709, 3), np.uint8)
    net, t = prepare_dynamic(img, DynamicDetParams(limit_side_len=736, max_side_len=4000))
    assert net.shape[:2] == (736, 3968)
    net, t = prepare_dynamic(
        img, DynamicDetParams(limit_side_len=736, max_side_len=4000, max_pixels=2_000_000))
    h, w = net.shape[:2]
    assert h * w <= 2_000_000 * 1.05 and h < 736
    assert abs(w / h - 3968 / 736) < 0.3
    assert (t.map_h, t.map_w) == (h, w)
