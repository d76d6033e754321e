"""Write the README's example request bodies from scikit-learn's held-out digits: for the
standard checkpoint (3x32x32 RGB, what ``make serve`` serves) ``digit.json``, ``digit.npy``
and ``digits-batch.npy``; for the demo checkpoint (1x8x8) the same under ``demo/``; and one
PNG image, which either checkpoint preprocesses as its manifest says.

    .venv/bin/python examples/make_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from model_store.data import builtin_task

HERE = Path(__file__).resolve().parent


def write(folder: Path, x: np.ndarray) -> None:
    """One example as model-space JSON and .npy, and the batch ``x`` (B, C, H, W)."""
    folder.mkdir(exist_ok=True)
    (folder / "digit.json").write_text(json.dumps({"inputs": np.round(x[0], 4).tolist()}) + "\n")
    np.save(folder / "digit.npy", x[0])
    np.save(folder / "digits-batch.npy", x)


def main() -> None:
    demo = builtin_task("digits", seed=0)
    standard = builtin_task("digits", seed=0, size=32, color_mode="RGB")
    write(HERE, standard.x_test[:4])  # (4, 3, 32, 32)
    write(HERE / "demo", demo.x_test[:4])  # (4, 1, 8, 8)
    x, y = standard.x_test[:4], standard.y_test[:4]
    prep = standard.spec.preprocessing
    pixels = (x[0, 0] * prep.std[0] + prep.mean[0]).clip(0, 1)  # back to [0, 1]
    # The standard checkpoint's own 32x32 input as a grey PNG: the demo resizes it to 8x8.
    Image.fromarray((pixels * 255).round().astype(np.uint8), "L").save(HERE / "digit.png")
    assert (demo.y_test[:4] == y).all()  # the same held-out digits
    print(f"wrote digit.json/.npy/.png, digits-batch.npy and demo/ (labels {y.tolist()})")


if __name__ == "__main__":
    main()
