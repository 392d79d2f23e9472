"""Synthetic text images with known ground truth, generated at test time.

Text is drawn with TrueType fonts found on the system (DejaVu, Liberation, Noto CJK, ...)
through Pillow; when none is installed, OpenCV's built-in Hershey fonts are used so that
the helpers still work (Latin text only). Everything is driven by a ``random.Random`` the
caller seeds, so an image is the same on every run and every machine with the same fonts.

Other tests reuse :func:`lines_image` to draw N-line documents and :func:`grid_image` to
draw many separate words (e.g. 200 regions).
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from pathlib import Path

import attrs
import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = (
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".fonts",
    Path("/Library/Fonts"),
    Path("C:/Windows/Fonts"),
)

#: Latin fonts preferred for English text, in order (file names, searched recursively).
LATIN_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSerif-Regular.ttf",
    "DejaVuSans-Bold.ttf",
)
#: CJK fonts, in order.
CJK_FONTS = (
    "NotoSansCJK-Regular.ttc",
    "NotoSerifCJK-Regular.ttc",
    "NotoSansCJKsc-Regular.otf",
    "wqy-microhei.ttc",
    "wqy-zenhei.ttc",
)

ENGLISH_WORDS = (
    "invoice total amount date order number customer service account balance payment "
    "receipt delivery address street city market coffee bread milk water price quantity "
    "station north south river garden window paper letter morning evening library school "
    "museum hospital airport ticket travel energy system network sensor camera device "
    "report summary project meeting office company product quality release version "
    "Monday Friday April October London Berlin Paris Madrid Tokyo Sydney"
).split()
#: Common simplified Chinese words.
CHINESE_WORDS = (
    "中国 北京 上海 发票 金额 日期 客户 服务 银行 账户 支付 收据 地址 城市 市场 "
    "咖啡 面包 牛奶 价格 数量 车站 花园 图书馆 学校 医院 机场 旅行 系统 网络 公司 "
    "产品 质量 会议 办公室 报告 项目 时间 电话 号码 欢迎 光临 谢谢 合计 现金"
).split()


def find_fonts(names: Sequence[str]) -> list[Path]:
    """Installed font files among ``names``, in the order given (each found once)."""
    found: dict[str, Path] = {}
    for d in FONT_DIRS:
        if not d.is_dir():
            continue
        for path in d.rglob("*"):
            if path.name in names and path.name not in found:
                found[path.name] = path
    return [found[n] for n in names if n in found]


def latin_fonts() -> list[Path]:
    return find_fonts(LATIN_FONTS)


def cjk_fonts() -> list[Path]:
    return find_fonts(CJK_FONTS)


@attrs.frozen
class Sample:
    """An image (BGR uint8) and the text lines drawn on it, top to bottom."""

    image: np.ndarray = attrs.field(eq=False, repr=lambda a: f"<array {a.shape}>")
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def random_line(rng: random.Random, words: Sequence[str], n_words: int, sep: str = " ") -> str:
    """``n_words`` random words; numbers are mixed in for Latin text."""
    out = []
    for _ in range(n_words):
        if sep == " " and rng.random() < 0.15:
            out.append(str(rng.randint(1, 9999)))
        else:
            out.append(rng.choice(words))
    return sep.join(out)


def _text_size(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int, int, int]:
    return font.getbbox(text)


def render_line(
    text: str, font_path: Path | None, size: int, *, angle: float = 0.0, noise: float = 0.0,
    rng: random.Random | None = None, fg: int = 20, bg: int = 245, margin: int | None = None,
) -> np.ndarray:
    """One line of ``text`` on a plain background, rotated by ``angle`` degrees
    (counter-clockwise) and with Gaussian noise of standard deviation ``noise``."""
    rng = rng or random.Random(0)
    margin = size if margin is None else margin
    if font_path is not None:
        font = ImageFont.truetype(str(font_path), size)
        x0, y0, x1, y1 = _text_size(font, text)
        w, h = x1 - x0 + 2 * margin, y1 - y0 + 2 * margin
        img = Image.new("L", (w, h), bg)
        ImageDraw.Draw(img).text((margin - x0, margin - y0), text, font=font, fill=fg)
        arr = np.asarray(img)
    else:
        arr = _hershey_line(text, size, fg, bg, margin)
    if angle:
        arr = _rotate(arr, angle, bg)
    if noise > 0:
        np_rng = np.random.default_rng(rng.randrange(2**32))
        arr = np.clip(arr.astype(np.float32) + np_rng.normal(0, noise, arr.shape), 0, 255)
        arr = arr.astype(np.uint8)
    return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)


def _hershey_line(text: str, size: int, fg: int, bg: int, margin: int) -> np.ndarray:
    face = cv2.FONT_HERSHEY_SIMPLEX
    scale = size / 30.0
    thickness = max(1, size // 16)
    (w, h), base = cv2.getTextSize(text, face, scale, thickness)
    arr = np.full((h + base + 2 * margin, w + 2 * margin), bg, dtype=np.uint8)
    cv2.putText(arr, text, (margin, margin + h), face, scale, fg, thickness, cv2.LINE_AA)
    return arr


def _rotate(arr: np.ndarray, angle: float, bg: int) -> np.ndarray:
    """Rotate about the centre, growing the canvas so nothing is cut off."""
    h, w = arr.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos) + 2, int(h * cos + w * sin) + 2
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(arr, m, (nw, nh), flags=cv2.INTER_CUBIC, borderValue=bg)


def lines_image(
    lines: Sequence[str], font_path: Path | None = None, size: int = 28, *, line_gap: float = 0.8,
    margin: int = 40, fg: int = 20, bg: int = 245,
) -> Sample:
    """A document: ``lines`` drawn top to bottom, left aligned, one font and size."""
    rendered = [render_line(t, font_path, size, fg=fg, bg=bg, margin=0) for t in lines]
    page = stack(rendered, gap=int(size * line_gap), margin=margin, bg=bg)
    return Sample(page, tuple(lines))


def grid_image(
    n: int, rng: random.Random, font_path: Path | None = None, size: int = 22,
    columns: int = 10, words: Sequence[str] = ENGLISH_WORDS,
) -> Sample:
    """``n`` separate words laid out on a grid (``columns`` per row), one region each.
    The ground truth lines are the rows, words joined by spaces."""
    chosen = [rng.choice(words) for _ in range(n)]
    cells = [render_line(w, font_path, size, margin=0) for w in chosen]
    cell_w = max(c.shape[1] for c in cells) + size * 2
    cell_h = max(c.shape[0] for c in cells) + size
    rows = (n + columns - 1) // columns
    canvas = np.full((rows * cell_h + 2 * size, columns * cell_w + 2 * size, 3), 245, np.uint8)
    lines = []
    for r in range(rows):
        row_words = []
        for c in range(columns):
            k = r * columns + c
            if k >= n:
                break
            cell = cells[k]
            y, x = size + r * cell_h, size + c * cell_w
            canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
            row_words.append(chosen[k])
        lines.append(" ".join(row_words))
    return Sample(canvas, tuple(lines))


def stack(
    images: Sequence[np.ndarray], gap: int = 24, margin: int = 32, bg: int = 245
) -> np.ndarray:
    """Place BGR images one under the other, left aligned, on a plain page."""
    width = max(i.shape[1] for i in images) + 2 * margin
    height = sum(i.shape[0] for i in images) + gap * (len(images) - 1) + 2 * margin
    page = np.full((height, width, 3), bg, dtype=np.uint8)
    y = margin
    for i in images:
        page[y : y + i.shape[0], margin : margin + i.shape[1]] = i
        y += i.shape[0] + gap
    return page


def encode(image: np.ndarray, fmt: str = "PNG", **params) -> bytes:
    """Encode a BGR (or grey) array with Pillow: ``fmt`` is a Pillow format name."""
    rgb = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **params)
    return buf.getvalue()
