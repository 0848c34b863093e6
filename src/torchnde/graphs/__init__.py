"""Graph neural differential equations on plain PyTorch: GDE, GRAND, FDGNN and graph layers."""

from .fdgnn import FDGNN as FDGNN
from .fdgnn import GraphReservoir as GraphReservoir
from .fdgnn import ridge_readout as ridge_readout
from .gde import GDE as GDE
from .gde import GraphSequence as GraphSequence
from .gde import GraphVectorField as GraphVectorField
from .grand import GRAND as GRAND
from .grand import DiffusionField as DiffusionField
from .grand import GraphAttention as GraphAttention
from .graph import Graph as Graph
from .graph import as_graph as as_graph
from .graph import propagate as propagate
from .graph import segment_softmax as segment_softmax
from .layers import GATConv as GATConv
from .layers import GCNConv as GCNConv
from .layers import Pointwise as Pointwise
from .layers import SAGEConv as SAGEConv

__all__ = [
    "FDGNN",
    "GDE",
    "GRAND",
    "DiffusionField",
    "GATConv",
    "GCNConv",
    "Graph",
    "GraphAttention",
    "GraphReservoir",
    "GraphSequence",
    "GraphVectorField",
    "Pointwise",
    "SAGEConv",
    "as_graph",
    "propagate",
    "ridge_readout",
    "segment_softmax",
]
