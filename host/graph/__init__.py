"""The compiler's graph IR (DESIGN §6): :class:`Graph` of :class:`Tensor` and :class:`Node`,
and its float evaluation (:func:`run_graph`, :func:`run_outputs`)."""
from .evaluate import apply_tail, run_graph, run_outputs
from .graph import COMPUTE_OPS, Graph, Node, Output, Tensor, chw

__all__ = ["Graph", "Node", "Output", "Tensor", "COMPUTE_OPS", "chw", "run_graph", "run_outputs", "apply_tail"]
