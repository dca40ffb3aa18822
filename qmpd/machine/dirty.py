"""Dirty-page bitmaps: decode (only non-zero u64 words) shared by the KVM and TCG logs."""

from __future__ import annotations

import numpy as np


def bitmap_words(npages: int) -> int:
    """u64 words in a bitmap covering ``npages`` (KVM's layout: bit i = page i)."""
    return (npages + 63) // 64


#: Up to this many words, unpacking the whole bitmap in one go is quicker than finding
#: the non-zero words first (fewer numpy calls, which is what a checkpoint pays for).
WHOLE_UNPACK_WORDS = 1024


def decode_bitmap(bitmap: np.ndarray) -> np.ndarray:
    """Sorted uint64 page indices of the set bits of a uint64 bitmap."""
    if bitmap.size <= WHOLE_UNPACK_WORDS:
        every = np.unpackbits(bitmap.view(np.uint8), bitorder="little")
        return np.flatnonzero(every).view(np.uint64)  # non-negative: a free reinterpretation
    nz = np.flatnonzero(bitmap)
    if nz.size == 0:
        return np.empty(0, dtype=np.uint64)
    words = bitmap[nz]
    bits = np.unpackbits(words.view(np.uint8), bitorder="little").reshape(-1, 64)
    rows, cols = np.nonzero(bits)
    return (nz[rows].astype(np.uint64) << np.uint64(6)) | cols.astype(np.uint64)
