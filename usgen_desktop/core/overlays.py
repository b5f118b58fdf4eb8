"""Screen overlays inside the imaged region: what a scanner or an anonymiser drew over the scan.

HC18's images carry black anonymisation boxes inside the fan (bottom right, sometimes top
right). A generator trained on them learns to draw such boxes, and since fans differ it draws
them at random places. Training masks these pixels out of the loss (and fills them in the
training image), so the box is not part of what is imitated.

Qt- and torch-free: numpy and OpenCV only.
"""

from __future__ import annotations

import numpy as np

IGNORE_BIT = 128  # set in a training label map where the loss must not look (label ids < 128)


def screen_overlays(image: np.ndarray, region: np.ndarray | None = None, dark: int = 1,
                    solid: int = 13, min_area: float = 0.002, min_fill: float = 0.7,
                    grow: int = 2) -> np.ndarray:
    """Boolean mask of flat black rectangles inside ``region`` (the fan; default the whole
    image): pixels at most ``dark`` that lie in solid ``solid`` x ``solid`` blocks of such
    pixels, in connected pieces of at least ``min_area`` of the image that fill at least
    ``min_fill`` of their bounding box, grown by ``grow`` pixels. Speckle is never that flat,
    and dark fluid that is (early pregnancies) is not rectangular; a box cut by the fan's edge
    still fills most of its bounding box."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    h, w = img.shape
    black = (img <= dark).astype(np.uint8)
    # an opening keeps solid blocks and cuts the thin bridges of dark speckle that would join a
    # box to a dark neighbourhood (fluid, the image border) into one piece that is no rectangle
    black = cv2.morphologyEx(black, cv2.MORPH_OPEN, np.ones((solid, solid), np.uint8))
    if region is not None:
        # inside the region only: a box at the fan's edge would otherwise join the black
        # outside of the fan into one piece that is no rectangle (the grow below covers the rim)
        black &= np.asarray(region, bool).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(black, connectivity=4)
    out = np.zeros((h, w), bool)
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area < min_area * h * w or bw < 4 or bh < 4:
            continue
        piece = lab[y:y + bh, x:x + bw] == i
        if area / float(bw * bh) < min_fill:
            continue
        out[y:y + bh, x:x + bw] |= piece
    if grow > 0 and out.any():
        out = cv2.dilate(out.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    return out


def fill_overlays(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the overlay pixels filled from their surroundings (OpenCV's Telea
    inpainting), so a training image shows no box even at low noise levels."""
    import cv2

    img = np.asarray(image, np.uint8)
    if not np.any(mask):
        return img
    return cv2.inpaint(np.ascontiguousarray(img), np.asarray(mask, np.uint8), 5, cv2.INPAINT_TELEA)
