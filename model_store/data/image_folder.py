"""A task from a folder of class subfolders of images (the torchvision ImageFolder layout).

::

    path/
      cat/  001.png  002.jpg ...
      dog/  001.png ...

Class names are the sorted subfolder names. Hidden entries and files whose extension is
not an image format Pillow knows (``README.md``, ``labels.csv``) are skipped; a file with
an image extension that does not decode is an error, never silently dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from model_store.data._errors import DataError
from model_store.data.dataset import TaskData, make_task_data, stratified_split, task_name_from
from model_store.tasks import ColorMode

# Pillow modes holding one intensity channel (plus, for LA, alpha).
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def load_image_folder(
    path: str | Path,
    *,
    name: str | None = None,
    size: tuple[int, int] | None = None,
    color_mode: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TaskData:
    """Load every image under ``path/<class>/``, resized to ``size`` (H, W), split stratified.

    ``size`` defaults to the first image's size (first class, first file, sorted);
    ``color_mode`` defaults to ``"RGB"`` if any image's Pillow mode is not grayscale,
    else ``"L"``. Images are converted with Pillow's ``convert(color_mode)`` and resized
    bilinearly, then scaled to [0, 1]. ``name`` defaults to the folder name.

    Raises :class:`DataError` naming the path or file when the folder is missing, has fewer
    than 2 class subfolders, a class holds no images, an image does not decode, or the
    images are too few to hold out a test split; ``ValueError`` for a bad ``size``,
    ``color_mode`` or ``test_fraction``.
    """
    root = Path(path)
    if color_mode is not None and color_mode not in ("L", "RGB"):
        raise ValueError(f"color_mode must be 'L' or 'RGB', got {color_mode!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    files_by_class = _find_images(root)
    classes = tuple(files_by_class)
    files = [f for fs in files_by_class.values() for f in fs]
    y = np.concatenate(
        [np.full(len(fs), i, dtype=np.int64) for i, fs in enumerate(files_by_class.values())]
    )

    modes_and_sizes = [_header(f) for f in files]
    if size is None:
        w, h = modes_and_sizes[0][1]
        size = (h, w)
    mode: ColorMode
    if color_mode is None:
        mode = "L" if all(m in _GRAYSCALE_MODES for m, _ in modes_and_sizes) else "RGB"
    else:
        mode = "L" if color_mode == "L" else "RGB"
    x = np.stack([_pixels(f, mode, size) for f in files])  # (N, H, W) or (N, H, W, 3) uint8
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    x01 = x.astype(np.float32) / 255.0

    train, test = stratified_split(y, test_fraction, seed)
    if len(test) == 0:
        raise DataError(
            f"{root}: every class has a single image, so none can be held out for testing; "
            "add at least 2 images to a class"
        )
    pct = round(test_fraction * 100, 2)
    return make_task_data(
        name=name if name is not None else task_name_from(root.resolve().name),
        classes=classes,
        x_train=x01[train],
        y_train=y[train],
        x_test=x01[test],
        y_test=y[test],
        source=(
            f"image folder {root.resolve()} ({len(files)} images, {len(classes)} classes, "
            f"{mode} {size[0]}x{size[1]}; stratified {100 - pct:g}/{pct:g} split, seed {seed})"
        ),
    )


def _find_images(root: Path) -> dict[str, list[Path]]:
    """Sorted class name -> sorted image files; checks the layout."""
    if not root.exists():
        raise DataError(f"{root}: no such directory; pass a folder with one subfolder per class")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; pass a folder with one subfolder per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root}: no class subfolders; put each class's images in its own subfolder "
            "(e.g. cat/001.png, dog/001.png)"
        )
    if len(class_dirs) < 2:
        raise DataError(
            f"{root}: only one class subfolder ({class_dirs[0].name!r}); a task needs at "
            "least 2 classes"
        )
    extensions = set(Image.registered_extensions())
    files_by_class: dict[str, list[Path]] = {}
    for d in class_dirs:
        files = sorted(
            p
            for p in d.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
        )
        if not files:
            raise DataError(f"{d}: class folder holds no images; add images or remove the folder")
        files_by_class[d.name] = files
    return files_by_class


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """The Pillow mode and (W, H) size of an image file, reading only its header."""
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except Exception as e:  # Pillow raises many types for a bad file
        raise _unreadable(path, e) from e


def _pixels(path: Path, mode: ColorMode, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """The image at ``path`` as uint8 (H, W) for ``"L"`` or (H, W, 3) for ``"RGB"``."""
    try:
        with Image.open(path) as img:
            converted = img.convert(mode)
        if converted.size != (size[1], size[0]):
            converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(converted, dtype=np.uint8)
    except Exception as e:
        raise _unreadable(path, e) from e


def _unreadable(path: Path, e: Exception) -> DataError:
    return DataError(
        f"{path}: not a readable image ({type(e).__name__}: {e}); replace it with a valid "
        "image or remove it"
    )
