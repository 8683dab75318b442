"""Write a small image folder to try pyconv on your own images: colour PNGs of
three classes (a red square, a green disc, a blue bar, at random places and
sizes on dark noise), one subfolder per class.

    python examples/make_shapes.py shapes/ [--per-class 200] [--size 32]
"""
import argparse
import os

import numpy as np


def make_shapes(root, per_class=200, size=32, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for c, name in enumerate(("bar", "disc", "square")):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            cy, cx = rng.integers(5, size - 5, 2)
            r = rng.integers(3, max(4, size // 6))
            if name == "square":
                mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            elif name == "disc":
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                mask = (abs(yy - cy) <= 1) & (abs(xx - cx) <= r + 2)
            img[mask, c] = 255
            Image.fromarray(img).save(os.path.join(root, name, f"{i:04d}.png"))
    return root


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    make_shapes(args.folder, args.per_class, args.size)
    print(f"wrote {3 * args.per_class} images of {args.size}x{args.size} to {args.folder}")
