"""The engine (DESIGN §4): :class:`Engine` and its parts, one component per module.

* :mod:`.control` — :class:`~.control.Controller`, layers and output blocks;
* :mod:`.fetch` — :class:`~.fetch.DescriptorFetch`, descriptor fetch and checks;
* :mod:`.params` — :class:`~.params.ParamLoader`, biases and PReLU slopes;
* :mod:`.filters` — :class:`~.filters.FilterLoader`, the filter caches (direct mode);
* :mod:`.weight_transform` — :class:`~.weight_transform.WinogradFilterLoader`, ``U = G g Gᵀ``;
* :mod:`.scheduler` — :class:`~.scheduler.Scheduler`, the loop nest as a stream of beats;
* :mod:`.reader` — :class:`~.reader.FeatureReader`, the beats' feature words;
* :mod:`.winograd_path` — :class:`~.winograd_path.WinogradDatapath`, ``Bᵀ d B`` and ``Aᵀ M A``;
* :mod:`.residual` — :class:`~.residual.ResidualReader`, the residual Add's operand;
* :mod:`.writer` — :class:`~.writer.FeatureWriter`, output pixels into feature memory.
"""
from ..isa import EngineError
from .engine import Engine

__all__ = ["Engine", "EngineError"]
