"""``data frames``' PNG writer: lossless through FFmpeg's encoder, read back by the image loader."""

import numpy as np

from mmv_torch.data.media.decode import load_image
from mmv_torch.data.tools.frames import png_bytes


def test_png_bytes_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    for h, w in ((37, 51), (1, 1), (64, 3)):  # odd sizes: the encoder must not pad or subsample
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        data = png_bytes(frame)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        path = tmp_path / f"f{h}x{w}.png"
        path.write_bytes(data)
        np.testing.assert_array_equal(load_image(str(path)).numpy(), frame)
