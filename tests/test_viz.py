"""Overlays people can read: background not darkened, a legend of the classes present."""

from __future__ import annotations

import numpy as np

from zoo.viz import legend, overlay, with_legend


def test_black_classes_and_ignore_leave_the_image_as_it_is() -> None:
    image = np.full((2, 3, 3), 200, np.uint8)
    mask = np.array([[0, 1, 255], [1, 0, 2]], np.uint8)
    out = overlay(image, mask, [(0, 0, 0), (255, 0, 0), (0, 0, 255)], opacity=0.5)
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])  # background (black) is not darkened
    np.testing.assert_array_equal(out[0, 2], image[0, 2])  # 255 = ignore
    np.testing.assert_array_equal(out[0, 1], [228, 100, 100])


def test_legend_lists_the_classes_present() -> None:
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    band = legend(200, [1, 2], ["background", "red", "green"], palette)
    assert band.shape[1:] == (200, 3) and band.shape[0] >= 16
    assert ((band == (255, 0, 0)).all(-1)).any() and ((band == (0, 255, 0)).all(-1)).any()
    image = np.zeros((10, 200, 3), np.uint8)
    mask = np.full((10, 200), 1, np.uint8)
    drawn = with_legend(image, mask, ["background", "red", "green"], palette)
    assert drawn.shape[1] == 200 and ((drawn[10:] == (255, 0, 0)).all(-1)).any()
    assert not ((drawn[10:] == (0, 255, 0)).all(-1)).any()  # green is absent from the mask
    many = legend(120, list(range(3)), ["a-long-class-name", "another-long-name", "third-long-name"], palette)
    assert many.shape[0] > band.shape[0]  # entries wrap onto more lines in a narrow image
