"""Image bytes to model input, bounded by memory before anything is decoded.

``Image.open`` reads only the header, so the declared size is checked first against a pixel
budget tied to the model's input (:func:`pixel_budget`, 413 past it); JPEG (and MPO, the
multi-picture JPEG of phone cameras, whose first frame is the photo) is decoded at reduced
scale with ``draft``; everything else is reduced before it is converted. 16-bit greyscale
(modes ``I;16`` and ``I``) is scaled to 8 bits, not clipped. The server decodes in a few
threads of its own, so the memory all decodes hold at once is bounded too.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import BadInput

log = logging.getLogger(__name__)

__all__ = ["IMAGE_FORMATS", "decode_image", "open_image", "pixel_budget"]

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG's opener also reads MPO
MIN_PIXEL_BUDGET = 4096 * 4096  # a 16-megapixel photo is always fine
BUDGET_PER_INPUT_PIXEL = 256  # ... and larger models take larger images
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
RESIZABLE = frozenset({"L", "RGB", "RGBA", "LA", "I", "F"})  # bilinear, before conversion
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def pixel_budget(chw: tuple[int, int, int]) -> int:
    """The most pixels an image for this model may declare."""
    return max(MIN_PIXEL_BUDGET, BUDGET_PER_INPUT_PIXEL * chw[1] * chw[2])


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel in memory (bands of 2-4 take 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


class OpenedImage:
    """An image whose header is read and whose size is within budget; not yet decoded."""

    def __init__(self, image: Image.Image, chw: tuple[int, int, int]) -> None:
        self.image = image
        self.chw = chw

    @property
    def decoded_bytes(self) -> int:
        """An upper bound of the memory :meth:`decode` holds at its peak."""
        w, h = self.image.size
        extra = 5 if self.image.mode in SIXTEEN_BIT else 0  # float32 scaling, then 8 bits
        return w * h * (2 * _bytes_per_pixel(self.image.mode) + extra)

    def decode(self) -> np.ndarray:
        """-> uint8 [C, H, W]: orientation applied, channels converted, resized."""
        c, h, w = self.chw
        try:
            img = self.image
            orientation = img.getexif().get(_ORIENTATION, 1)
            img.load()
            if img.mode in SIXTEEN_BIT:
                img = _to_8bit(img)
            mode = "L" if c == 1 else "RGB"
            if img.mode not in RESIZABLE:
                img = img.convert(mode)
            target = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
            if img.size != target:
                img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)
            if orientation in _TRANSPOSE:
                img = img.transpose(_TRANSPOSE[orientation])
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
        except MemoryError:
            raise
        except Exception as e:  # Pillow's decoders raise many kinds on hostile bytes
            log.debug("image decode failed", exc_info=True)
            raise BadInput(f"could not decode the image: {e}") from None
        return arr[None] if c == 1 else np.moveaxis(arr, -1, 0).copy()


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit greyscale (0..65535) -> 8-bit: scaled, as an 8-bit copy of the image would be."""
    values = np.asarray(img).astype(np.float32)
    scaled = np.rint(np.clip(values, 0, 65535) * np.float32(255 / 65535))
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def open_image(data: bytes, chw: tuple[int, int, int], budget: int | None = None) -> OpenedImage:
    """Read the header of PNG/JPEG/... bytes and check the size it declares (nothing decoded)."""
    c, h, w = chw
    if c not in (1, 3):
        raise BadInput(
            f"this model takes {c}-channel input, which images cannot provide", status=415
        )
    if not data:
        raise BadInput("the image body is empty")
    budget = pixel_budget(chw) if budget is None else budget
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if img.format in ("JPEG", "MPO"):
            side = max(w, h)  # either orientation still gets at least the model's size
            img.draft("L" if c == 1 else "RGB", (side, side))
        width, height = img.size
    except Image.DecompressionBombError as e:
        raise BadInput(f"image is too large to decode: {e}", status=413) from None
    except UnidentifiedImageError:
        raise BadInput(
            f"could not decode the image: not one of {', '.join(IMAGE_FORMATS)}"
        ) from None
    except MemoryError:
        raise
    except Exception as e:  # a header Pillow cannot parse
        raise BadInput(f"could not decode the image: {e}") from None
    if width * height > budget:
        raise BadInput(
            f"image is {width}x{height} ({width * height} pixels); this model takes at most "
            f"{budget} pixels per image",
            status=413,
        )
    return OpenedImage(img, chw)


def decode_image(data: bytes, chw: tuple[int, int, int], budget: int | None = None) -> np.ndarray:
    """PNG/JPEG/... bytes -> uint8 [C, H, W] (:func:`open_image`, then decode)."""
    return open_image(data, chw, budget).decode()
