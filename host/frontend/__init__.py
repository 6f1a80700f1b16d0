"""Front ends: a model file → :class:`~nibble.host.graph.Graph` (DESIGN §6). ONNX:
:mod:`nibble.host.frontend.onnx`."""
