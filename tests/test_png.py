import numpy as np

from nbseg._png import decode_png, encode_png


def test_png_roundtrip_rgb_and_gray():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (6, 3, 3), (4, 4, 4)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        data = encode_png(a)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert (decode_png(data) == a).all()
