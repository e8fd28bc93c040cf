"""Pictures the tools write: the contact sheet of the main job."""
import numpy as np
import pytest
from PIL import Image

from pcsc_d2.utils.visualize import write_contact_sheet


def test_contact_sheet_tiles_rows_left_to_right(tmp_path):
    # 2 rows x 3 frames of 4x5 images, each filled with its own value r * 10 + c.
    rows = [[np.full((4, 5, 3), r * 10 + c, np.uint8) for c in range(3)] for r in range(2)]
    path = str(tmp_path / "sheet.png")
    write_contact_sheet(rows, path)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (8, 15, 3)
    for r in range(2):
        for c in range(3):
            assert (sheet[r * 4:(r + 1) * 4, c * 5:(c + 1) * 5] == r * 10 + c).all()


def test_contact_sheet_rejects_ragged_rows(tmp_path):
    frame = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="sheet.png"):
        write_contact_sheet([[frame, frame], [frame]], str(tmp_path / "sheet.png"))
    with pytest.raises(ValueError, match="equal, non-zero length"):
        write_contact_sheet([], str(tmp_path / "sheet.png"))
