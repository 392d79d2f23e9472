"""ocr.recognition, ocr.classify and ocr.order: packing, CTC decoding, pieces, reading order."""

from __future__ import annotations

import numpy as np
import pytest

from ocr.classify import CLS_HEIGHT, CLS_WIDTH, pack_cls, page_upside_down, upside_down
from ocr.order import line_texts, reading_order
from ocr.recognition import (
    BLANK,
    REC_MIN_WIDTH,
    REC_WIDTH_STEP,
    batch_width,
    build_charset,
    ctc_greedy_decode,
    join_pieces,
    pack_dynamic,
    pack_fixed_rgb,
    pad_width,
    resize_for_rec,
    split_wide_crop,
)

CHARSET = build_charset(list("abc"))  # blank, a, b, c, space


def _crop(h: int, w: int, value: int = 200) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


# ------------------------------------------------------------------ preprocessing


def test_charset_has_blank_first_and_space_last():
    assert CHARSET == ("", "a", "b", "c", " ") and CHARSET[BLANK] == ""


@pytest.mark.parametrize(("h", "w", "expected_w"), [(24, 100, 200), (48, 48, 48), (100, 33, 16),
                                                     (7, 1000, 6858)])
def test_resize_for_rec_is_48_high_and_keeps_aspect(h, w, expected_w):
    out = resize_for_rec(_crop(h, w))
    assert out.shape == (48, expected_w, 3)


def test_resize_for_rec_caps_the_width():
    assert resize_for_rec(_crop(10, 1000), 48, max_width=320).shape == (48, 320, 3)


def test_pack_dynamic_pads_to_the_batch_width_with_zero():
    a, b = resize_for_rec(_crop(24, 100, 255)), resize_for_rec(_crop(48, 100, 0))
    width = batch_width([a, b], 320)
    assert width == 320  # never below the nominal width
    batch = pack_dynamic([a, b], width)
    assert batch.shape == (2, 3, 48, 320) and batch.dtype == np.float32
    assert np.allclose(batch[0, :, :, :200], 1.0) and np.allclose(batch[0, :, :, 200:], 0.0)
    assert np.allclose(batch[1, :, :, :100], -1.0) and np.allclose(batch[1, :, :, 100:], 0.0)
    wide = resize_for_rec(_crop(10, 1000))
    assert batch_width([a, wide], 320) == wide.shape[1]


def test_pack_fixed_rgb_pads_and_fills_slots():
    crop = resize_for_rec(_crop(48, 100))
    crop[..., 0] = 10  # blue in BGR
    batch = pack_fixed_rgb([crop], 320, pad_value=128, slots=4)
    assert batch.shape == (4, 48, 320, 3) and batch.dtype == np.uint8
    assert (batch[0, :, :100, 2] == 10).all()  # blue is last in RGB
    assert (batch[0, :, 100:] == 128).all() and (batch[1:] == 128).all()


def test_pack_fixed_rgb_frames_are_the_crops_in_rgb_cut_at_the_width():
    rng = np.random.default_rng(11)
    crops = [rng.integers(0, 256, (48, w, 3), dtype=np.uint8) for w in (1, 57, 320, 411)]
    batch = pack_fixed_rgb(crops, 320, pad_value=7)
    for frame, crop in zip(batch, crops, strict=True):
        w = min(crop.shape[1], 320)
        assert np.array_equal(frame[:, :w], crop[:, :w, ::-1])
        assert (frame[:, w:] == 7).all()



def test_pad_width_is_the_lines_own_width_rounded_up():
    assert pad_width(200) == 208 and pad_width(208) == 208 and pad_width(209) == 224
    assert pad_width(10) == REC_MIN_WIDTH == pad_width(REC_MIN_WIDTH)
    assert pad_width(500, step=32, min_width=64) == 512
    assert pad_width(20, step=32, min_width=64) == 64
    # every resized line fits the width it is padded to, with less than one step spare
    for w in range(1, 2000, 7):
        padded = pad_width(w)
        assert padded >= w and padded % REC_WIDTH_STEP == 0
        assert padded - w < REC_WIDTH_STEP or padded == REC_MIN_WIDTH


# ------------------------------------------------------------------ CTC


def _probs(seq: list[int], p: float = 0.9, classes: int = 5) -> np.ndarray:
    out = np.full((len(seq), classes), (1 - p) / (classes - 1), np.float32)
    out[np.arange(len(seq)), seq] = p
    return out


def test_ctc_merges_repeats_and_drops_blanks():
    # a a _ a b b _ _ c  -> "aabc"  (a blank separates the two a's)
    seq = [1, 1, 0, 1, 2, 2, 0, 0, 3]
    [(text, conf)] = ctc_greedy_decode(_probs(seq)[None], CHARSET)
    assert text == "aabc"
    assert conf == pytest.approx(0.9)


def test_ctc_confidence_is_the_mean_of_kept_steps():
    probs = _probs([1, 1, 0, 2])
    probs[0, 1] = 0.6  # the kept step of the first 'a'
    probs[1, 1] = 0.99  # a repeat: merged, not counted
    probs[3, 2] = 0.8
    [(text, conf)] = ctc_greedy_decode(probs[None], CHARSET)
    assert text == "ab"
    assert conf == pytest.approx((0.6 + 0.8) / 2, abs=1e-6)


def test_ctc_all_blank_is_empty_with_zero_confidence_and_space_decodes():
    out = ctc_greedy_decode(np.stack([_probs([0, 0, 0]), _probs([1, 4, 2])]), CHARSET)
    assert out[0] == ("", 0.0)
    assert out[1][0] == "a b"


def test_ctc_reads_the_best_class_and_its_probability_of_every_step():
    rng = np.random.default_rng(7)
    charset = tuple(f"c{i}" for i in range(50))
    probs = rng.random((6, 25, 50), dtype=np.float32)
    probs[:, ::3, 0] = 2.0  # blanks between repeats
    probs[1, 4, 7] = probs[1, 4, 9] = 3.0  # a tie: the first index wins
    got = ctc_greedy_decode(probs, charset)
    best, best_p = probs.argmax(axis=2), probs.max(axis=2)
    for n, (text, conf) in enumerate(got):
        keep = np.r_[True, best[n, 1:] != best[n, :-1]] & (best[n] != 0)
        assert text == "".join(charset[c] for c in best[n][keep])
        assert conf == float(np.mean(best_p[n][keep]))
    assert "c7" in got[1][0] and "c9" not in got[1][0]


def test_ctc_rejects_bad_shapes():
    with pytest.raises(ValueError):
        ctc_greedy_decode(_probs([1, 2]), CHARSET)  # 2-D
    with pytest.raises(ValueError):
        ctc_greedy_decode(_probs([1, 2], classes=7)[None], CHARSET)


# ------------------------------------------------------------------ wide lines in pieces


def test_narrow_crop_is_not_split():
    crop = _crop(48, 300)
    pieces = split_wide_crop(crop, 48, 320)
    assert len(pieces) == 1 and pieces[0] is crop


def test_wide_crop_is_split_into_overlapping_pieces_that_cover_it():
    crop = np.tile(np.arange(1000, dtype=np.uint16)[None, :, None], (48, 1, 3))
    pieces = split_wide_crop(crop, 48, 320, overlap=16)
    assert len(pieces) == 4  # 320 + 3 * 304 >= 1000
    assert all(p.shape[1] <= 320 for p in pieces)
    starts = [int(p[0, 0, 0]) for p in pieces]
    ends = [int(p[0, -1, 0]) for p in pieces]
    assert starts[0] == 0 and ends[-1] == 999
    for prev_end, start in zip(ends, starts[1:], strict=False):
        assert start <= prev_end - 15  # consecutive pieces overlap by ~16 model pixels


def test_split_scales_with_crop_height():
    crop = _crop(96, 2000)  # scaled to 48 high it is 1000 wide
    pieces = split_wide_crop(crop, 48, 320, overlap=16)
    assert len(pieces) == 4 and all(p.shape[1] <= 640 for p in pieces)


def test_join_pieces_removes_the_repeated_seam():
    assert join_pieces([("hello wor", 0.9), ("world", 0.7)]) == ("hello world", pytest.approx(0.8))
    assert join_pieces([("abc", 1.0), ("xyz", 1.0)])[0] == "abcxyz"
    assert join_pieces([("only", 0.5)]) == ("only", 0.5)
    assert join_pieces([]) == ("", 0.0)


# ------------------------------------------------------------------ classifier


def test_pack_cls_is_48x192_aspect_kept_and_padded():
    batch = pack_cls([_crop(24, 40, 255), _crop(10, 1000, 0)])
    assert batch.shape == (2, 3, CLS_HEIGHT, CLS_WIDTH)
    assert np.allclose(batch[0, :, :, :80], 1.0) and np.allclose(batch[0, :, :, 80:], 0.0)
    assert np.allclose(batch[1], -1.0)  # squeezed into the full width


def test_upside_down_needs_the_180_label_over_threshold():
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.15, 0.85]], np.float32)
    assert upside_down(probs) == [False, True, False]
    assert upside_down(probs, threshold=0.8) == [False, True, True]


def test_an_image_is_upside_down_when_most_of_its_lines_are():
    up, down, unsure = [0.99, 0.01], [0.02, 0.98], [0.15, 0.85]
    assert page_upside_down(np.array([down]))
    assert page_upside_down(np.array([down, down, up]))
    assert not page_upside_down(np.array([down, up]))  # a tie is not a majority
    assert not page_upside_down(np.array([down, unsure, unsure]))  # not sure enough
    assert not page_upside_down(np.array([up, up, up, down]))


# ------------------------------------------------------------------ reading order


def _box(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_reading_order_lines_top_to_bottom_left_to_right():
    boxes = [
        _box(300, 12, 400, 40),  # 0: line 1, right
        _box(10, 100, 100, 130),  # 1: line 2, left
        _box(10, 10, 100, 38),  # 2: line 1, left
        _box(150, 105, 250, 128),  # 3: line 2, right (slightly lower, overlaps)
        _box(120, 11, 200, 39),  # 4: line 1, middle
    ]
    order = reading_order(boxes)
    assert order == [[2, 4, 0], [1, 3]]
    texts = ["c", "d", "a", "e", "b"]
    assert line_texts(texts, order) == ["a b c", "d e"]


def test_reading_order_needs_enough_vertical_overlap():
    # the second box overlaps the first by 10 of 30 px: a separate line
    order = reading_order([_box(0, 0, 100, 30), _box(200, 20, 300, 50)])
    assert order == [[0], [1]]
    assert reading_order([_box(0, 0, 100, 30), _box(200, 10, 300, 40)]) == [[0, 1]]


def test_reading_order_empty_and_line_texts_skip_empty_texts():
    assert reading_order([]) == []
    assert line_texts([], []) == []
    assert line_texts(["a", "", "b"], [[0, 1], [2]]) == ["a", "b"]
    assert line_texts(["", "b"], [[0], [1]]) == ["b"]
