"""Walking an ONNX model's subgraphs, for the checksum pass and the scrubber: what they hold and read."""

from __future__ import annotations

from collections.abc import Iterator

import onnx


def subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """Every subgraph of ``graph`` at any depth (an If's branches, a Loop's or Scan's body), outermost first."""
    for node in graph.node:
        for attr in node.attribute:
            inner = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else \
                list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []
            for sub in inner:
                yield sub
                yield from subgraphs(sub)


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every name a node inside a subgraph of ``graph`` reads: the main graph's tensors they read from the
    outer scope among them (found in review: a weight read only in an If's branch counted as read by no node)."""
    return {name for sub in subgraphs(graph) for node in sub.node for name in node.input}
