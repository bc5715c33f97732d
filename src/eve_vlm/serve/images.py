"""Image URLs of a request -> RGB images, with the operator's rules.

`data:` URLs (base64) are always accepted; local files (`file://` URLs or paths) only inside
`allow_local_dir`; `http(s)` URLs only with `allow_remote_urls`. Every refusal is a 400 APIError
whose `param` names the content part. Runs in a worker thread (decoding is CPU work).
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image

from ..data.image import ImageError, load_image
from .errors import APIError
from .settings import ServeSettings


def resolve_image(url: str, param: str, settings: ServeSettings) -> Image.Image:
    """The image an `image_url.url` designates, checked against the limits."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "data":
        data = _decode_data_url(url, param)
    elif scheme in ("http", "https"):
        data = _fetch(url, param, settings)
    elif scheme in ("file", ""):
        data = _read_local(url, param, settings)
    else:
        raise APIError(400, f"unsupported image URL scheme {scheme!r}: send a data: URL (base64)",
                       "invalid_image_url", param)
    return _open(data, param, settings.max_image_pixels)


def _decode_data_url(url: str, param: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise APIError(400, "a data: URL must look like data:image/png;base64,<base64 data>",
                       "invalid_image_url", param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise APIError(400, f"the data: URL holds invalid base64 ({e})", "invalid_base64", param) from e


def _fetch(url: str, param: str, settings: ServeSettings) -> bytes:
    if not settings.allow_remote_urls:
        raise APIError(400, "remote image URLs are disabled on this server (--allow-remote-urls); send the "
                            "image as a data: URL", "remote_urls_disabled", param)
    try:
        with urllib.request.urlopen(url, timeout=settings.remote_timeout_s) as response:  # noqa: S310
            data = response.read(settings.max_body_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise APIError(400, f"could not fetch the image URL ({e})", "image_fetch_failed", param) from e
    if len(data) > settings.max_body_bytes:
        raise APIError(400, f"the image at the URL is over {settings.max_body_bytes} bytes", "image_too_large", param)
    return data


def _read_local(url: str, param: str, settings: ServeSettings) -> bytes:
    if settings.allow_local_dir is None:
        raise APIError(400, "local image files are disabled on this server (--allow-local-dir); send the "
                            "image as a data: URL", "local_files_disabled", param)
    parts = urllib.parse.urlsplit(url)
    raw = urllib.parse.unquote(parts.path) if parts.scheme.lower() == "file" else url
    root = Path(settings.allow_local_dir).resolve()
    try:
        path = (root / raw).resolve()  # an absolute `raw` replaces root; symlinks are followed, then checked
    except (OSError, ValueError) as e:  # a NUL byte in the name, a symlink loop
        raise APIError(400, f"the image path is not a usable file name ({e})", "invalid_image_url", param) from e
    if not path.is_relative_to(root):
        raise APIError(400, "the image path lies outside the folder this server may read", "path_not_allowed", param)
    if path.is_file() and path.stat().st_size > settings.max_body_bytes:
        raise APIError(400, f"the image file is over {settings.max_body_bytes} bytes", "image_too_large", param)
    try:
        return path.read_bytes()
    except OSError as e:
        raise APIError(400, f"cannot read the image file ({e.strerror})", "invalid_image", param) from e


def _open(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """Read the header first, so an oversized image is refused before it is decoded."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise APIError(400, f"the image is too large ({e})", "image_too_large", param) from e
    except (OSError, Image.UnidentifiedImageError, ValueError) as e:
        raise APIError(400, "the data is not an image this server can read", "invalid_image", param) from e
    width, height = image.size
    if width * height > max_pixels:
        raise APIError(400, f"the image is {width}x{height} = {width * height} pixels; this server takes at most "
                            f"{max_pixels}", "image_too_large", param)
    try:
        return load_image(image, max_pixels)
    except (ImageError, Image.DecompressionBombError) as e:
        raise APIError(400, f"cannot decode the image ({e})", "invalid_image", param) from e
