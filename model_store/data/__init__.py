"""The data layer: built-in tasks and loaders for a user's own data, all in model space.

Every entry point returns a :class:`TaskData`: train/test arrays normalised with the
training split's per-channel mean/std, and the :class:`~model_store.tasks.TaskSpec` that
records that preprocessing for image uploads.

Errors: :class:`DataError` (a ``ValueError``) for data that is missing, malformed or
unsafe, its message naming the file; plain ``ValueError`` for bad arguments, such as an
unknown built-in task name.
"""

from model_store.data._errors import DataError
from model_store.data.builtin import BUILTIN_TASKS, builtin_task
from model_store.data.cifar import load_cifar
from model_store.data.dataset import TaskData
from model_store.data.image_folder import load_image_folder
from model_store.data.loaders import load_task
from model_store.data.npz import load_npz

__all__ = [
    "BUILTIN_TASKS",
    "DataError",
    "TaskData",
    "builtin_task",
    "load_cifar",
    "load_image_folder",
    "load_npz",
    "load_task",
]
