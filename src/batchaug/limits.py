"""Caps on what reading untrusted data may cost, so a crafted file fails with a message instead of
exhausting memory. Light on purpose (no torch): the config declares its defaults from here.
"""

from __future__ import annotations

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest image (width x height) decoded by default: PIL's ``Image.MAX_IMAGE_PIXELS`` (a quarter GiB
of 24-bit pixels), checked from the file's header before any decoder allocates (``data.max_pixels``)."""

MAX_MEMBER_BYTES = 512 * 1024 * 1024
"""Largest inflated size of one zip member read (512 MiB), checked before inflating: a zip bomb's
member declares, or inflates to, far more."""
