"""Compiler passes, one per file, each a function ``Graph → Graph`` testable alone (DESIGN §6).

Structural (after the front end, :mod:`nibble.host.frontend.onnx`, which also folds constants):
:func:`fold_slice`, :func:`fold_pad`, :func:`fold_bn`, :func:`fuse_add`, :func:`fuse_epilogue`,
:func:`place_concat`, :func:`flatten_gemm`, :func:`fold_gap`, :func:`host_tail`; for the engine's
configuration: :func:`split_gap`, :func:`fold_taps`; checks before calibration: :func:`check_fits` (with :func:`allocate`);
quantization: :func:`inq`, :func:`calibrate`; backend: :func:`allocate`, :func:`lower`
(→ :class:`~nibble.host.program.Program`). ``fold_bn``, ``inq`` and ``calibrate`` also take a
chain of layers (``list[ConvOp]``), as before the graph IR.
"""
from .allocate import allocate
from .calibrate import CALIB_CHUNK_ELEMENTS, CALIB_IMAGE_ELEMENTS, calibrate, calibration_data
from .fits import check_fits
from .flatten_gemm import flatten_gemm
from .fold_bn import fold_bn
from .fold_gap import fold_gap
from .fold_pad import fold_pad
from .fold_slice import fold_slice
from .fold_taps import fold_taps
from .fuse_add import fuse_add
from .fuse_epilogue import fuse_epilogue
from .place_concat import place_concat
from .split_gap import split_gap
from .host_tail import host_tail
from .inq import inq
from .lower import lower

__all__ = ["fold_slice", "fold_pad", "fold_bn", "fuse_add", "fuse_epilogue", "place_concat", "flatten_gemm",
           "fold_gap", "host_tail", "check_fits", "inq", "calibrate",
           "calibration_data", "allocate", "lower", "CALIB_CHUNK_ELEMENTS", "CALIB_IMAGE_ELEMENTS", "STRUCTURAL", "split_gap",
           "fold_taps"]

#: The structural passes in the order the compiler runs them.
STRUCTURAL = (fold_slice, fold_pad, fold_bn, fuse_add, fuse_epilogue, place_concat, flatten_gemm, fold_gap,
              host_tail)
