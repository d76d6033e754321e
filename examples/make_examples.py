"""Write the README's example request bodies: one handwritten digit (scikit-learn's
digits, held-out split) as model-space JSON and .npy, and as a PNG image, plus a batch.

    .venv/bin/python examples/make_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from model_store.data import builtin_task

HERE = Path(__file__).resolve().parent


def main() -> None:
    digits = builtin_task("digits", seed=0)
    x, y = digits.x_test[:4], digits.y_test[:4]  # (4, 1, 8, 8) model space
    (HERE / "digit.json").write_text(json.dumps({"inputs": np.round(x[0], 4).tolist()}) + "\n")
    np.save(HERE / "digit.npy", x[0])
    np.save(HERE / "digits-batch.npy", x)
    prep = digits.spec.preprocessing
    pixels = (x[0, 0] * prep.std[0] + prep.mean[0]).clip(0, 1)  # back to [0, 1]
    Image.fromarray((pixels * 255).round().astype(np.uint8), "L").resize(
        (32, 32), Image.NEAREST
    ).save(HERE / "digit.png")
    print(
        f"wrote digit.json, digit.npy, digit.png (label {y[0]}) and digits-batch.npy (labels {y.tolist()})"
    )


if __name__ == "__main__":
    main()
