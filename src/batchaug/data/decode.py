"""Bytes of one image file -> uint8 (C, H, W) tensor, optionally brought to a fixed square size.

Backends. ``"torchvision"`` (the default when available) decodes JPEG and PNG with torchvision's
libjpeg-turbo / libpng operators, which release the GIL, so a thread pool decodes in parallel; for
JPEG it gives the same pixels as PIL. The operators are called as ``torch.ops.image.*`` rather
than through ``torchvision.io.decode_jpeg``: that wrapper logs API usage and raises a
DeprecationWarning on every call (torchvision 0.29 deprecated its image I/O in favour of
TorchCodec), a third of the cost of decoding a 32x32 image. If the operators are missing (a future
torchvision), ``"pil"`` takes over; it also decodes every other format (BMP, GIF, TIFF, WebP...).

Channels. ``channels=3`` gives RGB (grayscale replicated, alpha dropped, CMYK and palettes
converted); ``channels=1`` gives grayscale and refuses a colour image rather than silently
discarding its colour; ``channels=None`` keeps the file's own kind (1 for grayscale, else 3).

Sizes (``image_size=S``), chosen by ``resize_mode``:
  ``"center_crop"`` (default)  resize the shorter side to S (bilinear, antialiased), then crop the
                               centre S x S -- torchvision's ``Resize(S) + CenterCrop(S)``;
  ``"stretch"``                resize to S x S, ignoring the aspect ratio;
  ``"crop"``                   crop the centre S x S without resampling (images smaller than S fail).
An image already S x S is returned unchanged in every mode.

Size limit. An image larger than ``max_pixels`` (width x height; default :data:`DEFAULT_MAX_PIXELS`,
PIL's ``MAX_IMAGE_PIXELS``; config key ``data.max_pixels``) is refused before any decoder allocates
its buffer: JPEG and PNG sizes are read from the file's header (SOF marker, IHDR chunk), other formats'
from PIL's lazy ``Image.open``. A few bytes can otherwise claim a 65535 x 65535 image (12 GiB of RGB).
For the formats PIL decodes, PIL's own ``MAX_IMAGE_PIXELS`` check applies as well.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from batchaug.errors import ConfigError, DataError
from batchaug.limits import DEFAULT_MAX_PIXELS


def _torchvision_ops() -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]] | None:
    try:
        import torchvision.io  # noqa: F401 - registers the torch.ops.image operators

        return torch.ops.image.decode_jpeg, torch.ops.image.decode_png
    except (ImportError, AttributeError, RuntimeError):
        return None


_TV_OPS = _torchvision_ops()
# torchvision's ImageReadMode values, fixed by its C++ enum.
_UNCHANGED, _GRAY, _RGB = 0, 1, 3
BACKENDS = ("torchvision", "pil")
DEFAULT_BACKEND = "torchvision" if _TV_OPS is not None else "pil"
"""The backend :func:`decode_image` uses when none is named."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm", ".pbm"})
RESIZE_MODES = ("center_crop", "stretch", "crop")

_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_TYPES = (0, 4)  # IHDR colour types: grayscale, grayscale + alpha
_PIL_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# How many bytes at each end of a file the cheap completeness check looks at. JPEG writers may pad
# after the end-of-image marker, so the marker is searched in the tail rather than required last.
END_CHECK_BYTES = 64


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension this module decodes (case-insensitive)."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def check_resize_mode(resize_mode: str) -> None:
    """Raise :class:`ConfigError` unless ``resize_mode`` is one of :data:`RESIZE_MODES`."""
    if resize_mode not in RESIZE_MODES:
        raise ConfigError(f"resize_mode={resize_mode!r}: allowed values are {', '.join(RESIZE_MODES)}")


def check_image_size(image_size: object) -> None:
    """Raise :class:`ConfigError` unless ``image_size`` is None or a positive int."""
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size={image_size!r}: must be a positive integer or None")


def ends_look_complete(head: bytes, tail: bytes, name: str) -> bool:
    """Cheap test that a ``.jpg``/``.jpeg``/``.png`` file is neither cut short nor garbage, from
    its first and last bytes.

    JPEG must start with the SOI marker and hold the EOI marker near its end; PNG must start with
    the PNG signature and end with the IEND chunk. Other extensions are not checked (``True``). A
    ``False`` is a strong hint, not proof (a PNG named ``.jpg`` fails too): confirm by decoding.
    """
    lower = name.lower()
    if lower.endswith((".jpg", ".jpeg")):
        return head.startswith(_JPEG_SOI) and _JPEG_EOI in tail
    if lower.endswith(".png"):
        return head.startswith(_PNG_SIGNATURE) and b"IEND" in tail[-12:]
    return True


def expected_complete_format(name: str) -> bool:
    """Whether :func:`ends_look_complete` checks files of this name (JPEG and PNG extensions)."""
    return name.lower().endswith((".jpg", ".jpeg", ".png"))


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG (its SOF marker) or PNG (its IHDR chunk) read from the header, without
    decoding; None for other formats or a header that does not parse (the decoder then reports it)."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(_JPEG_SOI):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            if i + 9 > n:
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def check_pixels(width: int, height: int, max_pixels: int | None, name: str) -> None:
    """Raise :class:`DataError` when a ``width x height`` image exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise DataError(f"{name} is {width}x{height} = {width * height:,} pixels, above the limit of "
                        f"{max_pixels:,} (config key data.max_pixels; a decompression bomb?)")


def decode_image(data: bytes, *, channels: int | None = 3, image_size: int | None = None,
                 resize_mode: str = "center_crop", name: str = "image",
                 backend: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode one encoded image.

    Args:
        data: the file's bytes.
        channels: 3 (RGB), 1 (grayscale; a colour image is an error) or None (the file's own).
        image_size: bring the image to ``image_size x image_size`` (see ``resize_mode``); None keeps
            the native size.
        resize_mode: ``"center_crop"``, ``"stretch"`` or ``"crop"`` (module docstring).
        name: how to name the image in an error message (e.g. ``"member 'x.jpg' of zip 'y.zip'"``).
        backend: ``"torchvision"`` or ``"pil"``; None: :data:`DEFAULT_BACKEND`.
        max_pixels: refuse images of more pixels (width x height), checked before decoding; None: no limit.

    Returns:
        A uint8 tensor (C, H, W). It may be a channels-last view of the decoder's (H, W, C) buffer:
        making it contiguous here would cost a third of the decode time for a 32x32 image, and
        ``torch.stack`` (which every batching path uses) copies it into place anyway.

    Raises:
        DataError: the bytes are not a decodable image, a colour image was asked for as grayscale, or the
            image has more than ``max_pixels`` pixels.
    """
    if channels not in (1, 3, None):
        raise ConfigError(f"channels={channels!r}: allowed values are 1, 3 or None")
    backend = check_backend(backend)
    size = header_size(data)
    if size is not None:
        check_pixels(*size, max_pixels, name)
    if backend == "torchvision" and data.startswith(_JPEG_SOI):
        img = _decode_jpeg(data, channels, name)
    elif backend == "torchvision" and data.startswith(_PNG_SIGNATURE):
        img = _decode_png(data, channels, name)
    else:
        img = _decode_pil(data, channels, name, max_pixels)
    if image_size is not None:
        img = fit_to_size(img, image_size, resize_mode, name=name)
    return img


def check_backend(backend: str | None) -> str:
    """The backend to use for ``backend`` (None: the default); :class:`ConfigError` if unusable."""
    if backend is None:
        return DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise ConfigError(f"decode backend {backend!r}: allowed values are {', '.join(BACKENDS)}")
    if backend == "torchvision" and _TV_OPS is None:
        raise ConfigError("decode backend 'torchvision': this torchvision has no image decoding "
                          "operators; use 'pil'")
    return backend


def fit_to_size(img: torch.Tensor, size: int, resize_mode: str = "center_crop", *,
                name: str = "image") -> torch.Tensor:
    """Bring a uint8 (C, H, W) or (N, C, H, W) tensor to ``size x size`` (see module docstring)."""
    check_resize_mode(resize_mode)
    if size < 1:
        raise ConfigError(f"image_size={size}: must be a positive number of pixels")
    h, w = img.shape[-2:]
    if h == size and w == size:
        return img
    if resize_mode == "stretch":
        return TF.resize(img, [size, size], antialias=True)
    if resize_mode == "center_crop" and min(h, w) != size:
        # Shorter side to `size`, the longer one scaled to keep the aspect ratio.
        if h <= w:
            new_h, new_w = size, max(size, round(w * size / h))
        else:
            new_h, new_w = max(size, round(h * size / w)), size
        img = TF.resize(img, [new_h, new_w], antialias=True)
        h, w = new_h, new_w
    if h < size or w < size:
        raise DataError(f"{name} is {w}x{h}, smaller than image_size={size}; resize_mode='crop' does "
                        "not upsample (use 'center_crop' or 'stretch')")
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size]


def _to_uint8(img: torch.Tensor) -> torch.Tensor:
    if img.dtype == torch.uint8:
        return img
    if img.dtype == torch.uint16:  # 16-bit PNG: keep the high byte, as torchvision's to_dtype does
        return (img.to(torch.int32) >> 8).to(torch.uint8)
    raise DataError(f"unexpected decoded dtype {img.dtype}")


def _buffer(data: bytes) -> torch.Tensor:
    # torch.frombuffer warns on immutable bytes; a bytearray copy (a few kB) is cheaper than
    # silencing the warning on every call.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _colour_error(name: str) -> DataError:
    return DataError(f"{name} is a colour image in a grayscale split (the split's first image is "
                     "grayscale); pass grayscale_to_rgb=True to load every image as RGB")


def _decode_jpeg(data: bytes, channels: int | None, name: str) -> torch.Tensor:
    assert _TV_OPS is not None
    decode_jpeg = _TV_OPS[0]
    buf = _buffer(data)
    try:
        if channels == 3:
            return decode_jpeg(buf, _RGB, False)
        img = decode_jpeg(buf, _UNCHANGED, False)
        if img.shape[0] == 1:
            return img
        if channels == 1:
            raise _colour_error(name)
        if img.shape[0] != 3:  # CMYK / YCCK: let libjpeg convert
            return decode_jpeg(buf, _RGB, False)
        return img
    except RuntimeError as exc:
        raise DataError(f"{name}: corrupt or truncated JPEG ({_short(exc)})") from exc


def _decode_png(data: bytes, channels: int | None, name: str) -> torch.Tensor:
    # The colour type sits at a fixed offset of the IHDR chunk; decoding UNCHANGED would hand back
    # palette indices for palette images, so choose the mode from the header instead.
    gray = len(data) > 25 and data[25] in _PNG_GRAY_TYPES
    if channels == 1 and not gray:
        raise _colour_error(name)
    want_rgb = channels == 3 or (channels is None and not gray)
    assert _TV_OPS is not None
    try:
        img = _TV_OPS[1](_buffer(data), _RGB if want_rgb else _GRAY, False)
    except RuntimeError as exc:
        raise DataError(f"{name}: corrupt or truncated PNG ({_short(exc)})") from exc
    return _to_uint8(img)


def _decode_pil(data: bytes, channels: int | None, name: str, max_pixels: int | None) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_pixels(*im.size, max_pixels, name)  # Image.open reads the header only; load() allocates
            im.load()
            gray = im.mode in _PIL_GRAY_MODES
            if channels == 1 and not gray:
                raise _colour_error(name)
            if channels == 3 or not gray:
                arr = np.asarray(im.convert("RGB"))
            elif im.mode.startswith("I;16"):
                arr = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
            else:
                arr = np.asarray(im.convert("L"))
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{name}: {_short(exc)} (PIL's Image.MAX_IMAGE_PIXELS)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{name}: not a decodable image ({_short(exc)})") from exc
    if arr.ndim == 2:
        return torch.from_numpy(arr.copy()).unsqueeze(0)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _short(exc: BaseException) -> str:
    # torchvision prefixes messages with a C++ source location; keep the human part.
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text.split(": ", 1)[-1] if ".cpp:" in text else text
