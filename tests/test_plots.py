"""Sample grids: small images enlarged, cells separated by gaps of the padding colour."""

import numpy as np
import pytest

from ppl_dgm.plots import grid_image, image_grid


def test_grid_has_gaps_between_enlarged_cells(tmp_path):
    images = np.stack([np.ones((8, 8)), np.zeros((8, 8)), np.full((8, 8), 0.25)])
    grid = grid_image(images, nrow=2, padding=3, pad_value=0.5)
    cell = 8 * 3  # 8x8 enlarged by 28 // 8 = 3
    assert grid.shape == (2 * (cell + 3) + 3, 2 * (cell + 3) + 3)
    np.testing.assert_array_equal(grid[3:3 + cell, 3:3 + cell], 1.0)             # first cell
    np.testing.assert_array_equal(grid[3:3 + cell, 6 + cell:6 + 2 * cell], 0.0)  # second cell
    np.testing.assert_array_equal(grid[6 + cell:6 + 2 * cell, 3:3 + cell], 0.25)  # next row
    # the frame and the gaps between cells are the padding colour; the empty 4th cell too (and the
    # default colour is white)
    assert grid_image(images, nrow=2)[0, 0] == 1.0
    np.testing.assert_array_equal(grid[:, cell + 3:cell + 6], 0.5)
    np.testing.assert_array_equal(grid[cell + 3:cell + 6, :], 0.5)
    np.testing.assert_array_equal(grid[6 + cell:6 + 2 * cell, 6 + cell:6 + 2 * cell], 0.5)
    # large images are not enlarged; values are clipped to [0, 1]
    assert grid_image(np.full((1, 28, 28), 2.0), nrow=1, padding=1).max() == 1.0
    assert grid_image(np.zeros((1, 28, 28)), nrow=1, padding=1).shape == (30, 30)
    image_grid(images, tmp_path / "g.png", nrow=2, padding=3)
    from matplotlib.image import imread

    assert imread(tmp_path / "g.png").shape[:2] == grid.shape
    with pytest.raises(ValueError, match="padding"):
        grid_image(images, padding=-1)
