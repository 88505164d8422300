"""Let mmengine checkpoints load under torch's ``weights_only=True`` default, and nothing more.

Since torch 2.6, ``torch.load`` refuses every global it does not know. mmengine 0.10.7 saves its message hub,
whose ``HistoryBuffer`` objects hold numpy arrays and references to their own statistics methods, so
``--resume`` fails with "Weights only load failed". Loading with ``weights_only=False`` would run any code a
downloaded checkpoint carries; instead this module allow-lists exactly the globals such a checkpoint uses:

* ``HistoryBuffer`` and the statistics methods it registers (``mean``, ``min``, ``max``, ...), fetched through a
  stand-in for ``getattr`` that accepts nothing else;
* numpy arrays of plain numeric dtypes and numpy scalars (object arrays stay refused).

Any other global still makes ``torch.load`` fail, naming it.
"""
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from numpy._core.multiarray import _reconstruct, scalar

NUMERIC_DTYPES = (np.dtypes.BoolDType, np.dtypes.Int8DType, np.dtypes.Int16DType, np.dtypes.Int32DType,
                  np.dtypes.Int64DType, np.dtypes.UInt8DType, np.dtypes.UInt16DType, np.dtypes.UInt32DType,
                  np.dtypes.UInt64DType, np.dtypes.Float16DType, np.dtypes.Float32DType, np.dtypes.Float64DType)

# HistoryBuffer registers these on its first instantiation; custom ones via HistoryBuffer.register_statistics
BUILTIN_STATISTICS = ('current', 'max', 'mean', 'min')


def history_buffer_statistic(owner: Any, name: str) -> Callable:
    """Stand-in for ``getattr`` while unpickling: only ``HistoryBuffer``'s registered statistics methods.

    A pickled ``HistoryBuffer`` refers to its methods as ``getattr(HistoryBuffer, 'mean')``.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    if owner is HistoryBuffer and (name in BUILTIN_STATISTICS or name in HistoryBuffer._statistics_methods):
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'refused getattr({getattr(owner, "__name__", type(owner).__name__)}, {name!r}) in a checkpoint: only the '
        "statistics methods of mmengine's HistoryBuffer are allowed. The file holds objects that an mmengine "
        'checkpoint does not.')


def mmengine_checkpoint_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The allow-list, in the form ``torch.serialization.add_safe_globals`` takes."""
    return [
        HistoryBuffer, np.ndarray, np.dtype, *NUMERIC_DTYPES, _reconstruct, scalar,
        # files written with numpy < 2 name the same functions under numpy.core
        (_reconstruct, 'numpy.core.multiarray._reconstruct'), (scalar, 'numpy.core.multiarray.scalar'),
        (history_buffer_statistic, 'builtins.getattr'),
    ]


def allow_mmengine_checkpoints() -> None:
    """Register the allow-list with torch (idempotent); ``import pic_plugin`` calls it."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
