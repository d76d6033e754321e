"""One entry point for every data source a user can name: :func:`load_task`."""

from __future__ import annotations

from pathlib import Path

from model_store.data._errors import DataError
from model_store.data.builtin import BUILTIN_TASKS, builtin_task
from model_store.data.cifar import is_cifar_dir, load_cifar
from model_store.data.dataset import TaskData
from model_store.data.image_folder import load_image_folder
from model_store.data.npz import load_npz


def load_task(source: str, *, seed: int = 0) -> TaskData:
    """Load a task from a built-in name or a path, choosing the loader from what is there.

    ``source`` is one of :data:`BUILTIN_TASKS`; a ``.npz`` file; an extracted CIFAR
    directory (or one holding ``cifar-10-batches-py``/``cifar-100-python``); or a folder of
    class subfolders of images. ``seed`` drives generation and train/test splits (CIFAR
    uses its official split).

    Raises :class:`DataError` when ``source`` is neither a built-in name nor an existing
    path, names an unsupported file, or the loader finds the data bad.
    """
    if source in BUILTIN_TASKS:
        return builtin_task(source, seed=seed)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"{source}: neither a built-in task ({', '.join(BUILTIN_TASKS)}) nor an existing "
            "file or directory"
        )
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return load_npz(path, seed=seed)
        if path.name.endswith((".tar.gz", ".tgz")):
            return load_cifar(path)  # raises, telling the user to extract the archive
        raise DataError(
            f"{path}: unsupported file; pass a .npz, a folder of class subfolders of images, "
            "or an extracted CIFAR directory"
        )
    if is_cifar_dir(path):
        return load_cifar(path)
    return load_image_folder(path, seed=seed)
