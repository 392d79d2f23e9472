"""Real PDF files with known content, written at test time.

A small PDF writer of our own (not PDFium's, so the reader under test does not also write
what it reads): pages with a real text layer (the standard Helvetica font, text placed at
known positions and sizes, visible or invisible as OCR tools write it over a scan), pages
holding a scanned-style image (a raster XObject placed at a known resolution), both, or
neither; page rotation; the standard security handler (RC4, revision 2) with a user
password, or with only an owner password as "protected" PDFs have; and deliberately
broken pages and files for the bad-input suites.

Everything is deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Sequence

import attrs
import cv2
import numpy as np
from PIL import Image

#: Points per inch: PDF user space units.
PT_PER_INCH = 72.0
#: US Letter, points.
LETTER = (612.0, 792.0)


@attrs.frozen
class TextRun:
    """One line of text: ``x``, ``y`` are the left end of its baseline in points from the
    page's *top-left* corner (the writer turns them into PDF's bottom-up space)."""

    text: str
    x: float
    y: float
    size: float = 12.0
    #: Render mode 3: in the text layer but not painted (what OCR tools put over scans).
    invisible: bool = False


@attrs.frozen
class PageImage:
    """A raster image covering ``rect`` (x, y, width, height in points from the top-left);
    None = the whole page. ``jpeg`` stores it DCT-compressed (as scanners do), else
    Flate-compressed and lossless. ``jpeg_file``: a JPEG file's own bytes, embedded as
    they are (``pixels`` then only gives the size and channels)."""

    pixels: np.ndarray = attrs.field(eq=False, repr=lambda a: f"<array {a.shape}>")
    rect: tuple[float, float, float, float] | None = None
    jpeg: bool = False
    jpeg_file: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen
class PageSpec:
    width: float = LETTER[0]
    height: float = LETTER[1]
    texts: tuple[TextRun, ...] = ()
    image: PageImage | None = None
    rotate: int = 0
    #: Listed in the page tree, but its object is not a page: PDFium cannot load it.
    broken: bool = False


def text_page(lines: Sequence[str], size: float = 12.0, *, top: float = 72.0,
              left: float = 72.0, leading: float = 1.6, invisible: bool = False,
              page: tuple[float, float] = LETTER) -> PageSpec:
    """A page of ``lines`` in Helvetica at ``size`` points, top to bottom."""
    runs = tuple(
        TextRun(line, left, top + size + i * size * leading, size, invisible)
        for i, line in enumerate(lines)
    )
    return PageSpec(page[0], page[1], texts=runs)


def scanned_page(pixels: np.ndarray, dpi: float, *, jpeg: bool = True) -> PageSpec:
    """A page exactly the size of ``pixels`` (BGR or grey) scanned at ``dpi``."""
    height, width = pixels.shape[:2]
    return PageSpec(width * PT_PER_INCH / dpi, height * PT_PER_INCH / dpi,
                    image=PageImage(pixels, None, jpeg))


def scanned_file_page(data: bytes, dpi: float) -> PageSpec:
    """A page holding an image file (JPEG: its bytes as they are, as a scanner's PDF
    holds them; anything else decoded and stored losslessly) scanned at ``dpi``."""
    img = Image.open(io.BytesIO(data))
    grey = img.mode in ("L", "1")
    pixels = np.asarray(img.convert("L" if grey else "RGB"))
    if not grey:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    jpeg = img.format == "JPEG" and img.mode in ("L", "RGB")
    spec = scanned_page(pixels, dpi, jpeg=jpeg)
    if jpeg:
        spec = attrs.evolve(spec, image=attrs.evolve(spec.image, jpeg_file=data))
    return spec


def render_lines(lines: Sequence[str], size_pt: float, dpi: float, *,
                 page: tuple[float, float] = LETTER, font=None) -> np.ndarray:
    """What a scanner at ``dpi`` would see of :func:`text_page` (same lines, size and
    positions), drawn with a TrueType font (DejaVu Sans when installed) through Pillow:
    grey, black on white."""
    from PIL import ImageDraw, ImageFont

    scale = dpi / PT_PER_INCH
    w, h = round(page[0] * scale), round(page[1] * scale)
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    px = max(1, round(size_pt * scale))
    face = ImageFont.truetype(str(font), px) if font else ImageFont.load_default(px)
    spec = text_page(lines, size_pt, page=page)
    for run in spec.texts:
        draw.text((run.x * scale, run.y * scale), run.text, font=face, fill=0, anchor="ls")
    return np.asarray(img)


# -- the writer ---------------------------------------------------------------------------

_PAD = bytes.fromhex(
    "28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A"
)


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def _padded(password: str) -> bytes:
    return (password.encode("latin-1") + _PAD)[:32]


@attrs.frozen
class _Security:
    """The standard security handler, revision 2 (40-bit RC4): PDF 1.7, 7.6.3."""

    key: bytes
    o: bytes
    u: bytes
    p: int
    file_id: bytes

    @classmethod
    def make(cls, user: str, owner: str, file_id: bytes) -> _Security:
        p = -44  # print, copy and modify not granted: what "protected" PDFs set
        o = _rc4(hashlib.md5(_padded(owner or user)).digest()[:5], _padded(user))
        key = hashlib.md5(
            _padded(user) + o + p.to_bytes(4, "little", signed=True) + file_id
        ).digest()[:5]
        return cls(key, o, _rc4(key, _PAD), p, file_id)

    def encrypt(self, num: int, data: bytes) -> bytes:
        k = hashlib.md5(self.key + num.to_bytes(3, "little") + b"\x00\x00").digest()
        return _rc4(k[: len(self.key) + 5], data)


def _pdf_string(data: bytes) -> bytes:
    return b"<" + data.hex().encode() + b">"


def _text_string(text: str) -> bytes:
    return _pdf_string(text.encode("cp1252"))


class _Writer:
    def __init__(self, security: _Security | None) -> None:
        self.objects: list[bytes | None] = [None]  # 1-based object numbers
        self.security = security

    def reserve(self) -> int:
        self.objects.append(None)
        return len(self.objects) - 1

    def put(self, num: int, body: bytes) -> int:
        self.objects[num] = body
        return num

    def add(self, body: bytes) -> int:
        return self.put(self.reserve(), body)

    def stream(self, num: int, data: bytes, extra: bytes = b"") -> int:
        if self.security is not None:
            data = self.security.encrypt(num, data)
        head = b"<< /Length %d %s>>\nstream\n" % (len(data), extra)
        return self.put(num, head + data + b"\nendstream")

    def tobytes(self, root: int, encrypt: int | None, file_id: bytes) -> bytes:
        out = io.BytesIO()
        out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for num in range(1, len(self.objects)):
            offsets.append(out.tell())
            out.write(b"%d 0 obj\n" % num + (self.objects[num] or b"null") + b"\nendobj\n")
        xref = out.tell()
        out.write(b"xref\n0 %d\n0000000000 65535 f \n" % len(self.objects))
        for off in offsets:
            out.write(b"%010d 00000 n \n" % off)
        trailer = b"<< /Size %d /Root %d 0 R /ID [%s %s]" % (
            len(self.objects), root, _pdf_string(file_id), _pdf_string(file_id))
        if encrypt is not None:
            trailer += b" /Encrypt %d 0 R" % encrypt
        out.write(b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref)
        return out.getvalue()


def _image_xobject(w: _Writer, image: PageImage) -> int:
    pixels = image.pixels
    grey = pixels.ndim == 2
    height, width = pixels.shape[:2]
    if image.jpeg_file is not None:
        data, filt = image.jpeg_file, b"/DCTDecode"
    elif image.jpeg:
        ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        data, filt = buf.tobytes(), b"/DCTDecode"
    else:
        raw = pixels if grey else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        data, filt = zlib.compress(np.ascontiguousarray(raw).tobytes(), 6), b"/FlateDecode"
    space = b"/DeviceGray" if grey else b"/DeviceRGB"
    extra = b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s " \
            b"/BitsPerComponent 8 /Filter %s " % (width, height, space, filt)
    return w.stream(w.reserve(), data, extra)


def _content(spec: PageSpec, has_image: bool) -> bytes:
    """The page's content stream (encrypted as a whole, if at all, by the writer)."""
    ops = []
    if has_image:
        x, y, iw, ih = spec.image.rect or (0.0, 0.0, spec.width, spec.height)
        ops.append(b"q %.4f 0 0 %.4f %.4f %.4f cm /Im1 Do Q" % (
            iw, ih, x, spec.height - y - ih))
    for run in spec.texts:
        ops.append(b"BT /F1 %.2f Tf %d Tr %.4f %.4f Td %s Tj ET" % (
            run.size, 3 if run.invisible else 0, run.x, spec.height - run.y,
            _text_string(run.text)))
    return b"\n".join(ops)


def make_pdf(pages: Sequence[PageSpec], *, user_password: str | None = None,
             owner_password: str = "owner") -> bytes:
    """A PDF of ``pages``. With ``user_password`` (``""`` for an owner-password-only,
    "protected" PDF that opens without one) the file is encrypted with RC4."""
    file_id = hashlib.md5(repr(len(pages)).encode() + b"hailo-ocr test").digest()
    security = None
    if user_password is not None:
        security = _Security.make(user_password, owner_password, file_id)
    w = _Writer(security)
    catalog, tree = w.reserve(), w.reserve()
    font = w.add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                 b"/Encoding /WinAnsiEncoding >>")
    kids = []
    for spec in pages:
        page = w.reserve()
        kids.append(page)
        resources = b"/Font << /F1 %d 0 R >>" % font
        if spec.image is not None:
            resources += b" /XObject << /Im1 %d 0 R >>" % _image_xobject(w, spec.image)
        if spec.broken:  # listed among the pages, but not a page: PDFium cannot load it
            w.put(page, b"null")
            continue
        contents = w.reserve()
        w.stream(contents, _content(spec, spec.image is not None))
        w.put(page, b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %.2f %.2f] /Rotate %d "
                    b"/Resources << %s >> /Contents %d 0 R >>"
              % (tree, spec.width, spec.height, spec.rotate, resources, contents))
    w.put(tree, b"<< /Type /Pages /Kids [%s] /Count %d >>"
          % (b" ".join(b"%d 0 R" % k for k in kids), len(kids)))
    w.put(catalog, b"<< /Type /Catalog /Pages %d 0 R >>" % tree)
    encrypt = None
    if security is not None:
        encrypt = w.add(b"<< /Filter /Standard /V 1 /R 2 /O %s /U %s /P %d >>" % (
            _pdf_string(security.o), _pdf_string(security.u), security.p))
    return w.tobytes(catalog, encrypt, file_id)


def multipage_tiff(pages: Sequence[np.ndarray], dpi: float = 200.0) -> bytes:
    """A multi-page TIFF (one BGR or grey array per page), LZW-compressed."""
    frames = [Image.fromarray(p if p.ndim == 2 else cv2.cvtColor(p, cv2.COLOR_BGR2RGB))
              for p in pages]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:],
                   compression="tiff_lzw", dpi=(dpi, dpi))
    return out.getvalue()
