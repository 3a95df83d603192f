"""Partition: which ops run in engines and which in PyTorch, and the segments between them.

Inductor compiles nearly every ATen op, so the support table is short and explicit: ops whose
output shape depends on tensor data, ops outside ATen (custom ops, higher-order ops), and the
user's `torch_executed_ops` run in PyTorch. Supported ops are grouped into maximal segments
(torch.fx's CapabilityBasedPartitioner) and segments smaller than `min_block_size` fall back to
PyTorch when the graph is partitioned anyway. Size arithmetic (sym_size, operator.mul) is
recomputed inside each segment that needs it, so only tensors cross segment boundaries.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import operator
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase

from flexrt.errors import UnsupportedOpError
from flexrt.ir import OutputRef
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)

Kind = Literal["engine", "torch"]
NodeKind = Literal["engine", "torch", "scalar"]

_aten = torch.ops.aten
DATA_DEPENDENT: frozenset[Any] = frozenset(
    {
        _aten.nonzero,
        _aten.masked_select,
        _aten.unique_dim,
        _aten.unique_consecutive,
        _aten._unique,
        _aten._unique2,
        _aten.unique_dim_consecutive,
        _aten._local_scalar_dense,
        _aten.item,
        _aten.bincount,
        _aten.argwhere,
        _aten.nonzero_numpy,
        _aten.histc,
    }
)
_REPEAT_INTERLEAVE_DATA = _aten.repeat_interleave.Tensor
_PURE_SCALAR_NAMESPACES = ("_operator", "math", "torch.sym", "torch.fx.experimental.sym_node")


def op_name(node: torch.fx.Node) -> str:
    """A readable, stable name: `aten.linear.default`, `operator.mul`, `mylib.op.default`."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    if isinstance(target, str):
        return target
    mod = getattr(target, "__module__", "") or ""
    return f"{mod.replace('_operator', 'operator')}.{getattr(target, '__name__', str(target))}".strip(".")


def _is_tensor_valued(node: torch.fx.Node) -> bool:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return True
    return isinstance(val, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in val)


def _matches(node: torch.fx.Node, names: frozenset[str]) -> bool:
    if not names:
        return False
    full = op_name(node)
    packet = full.rsplit(".", 1)[0] if isinstance(node.target, torch._ops.OpOverload) else full
    return full in names or packet in names or full.replace("aten.", "", 1) in names or packet.replace("aten.", "", 1) in names


def classify(gm: torch.fx.GraphModule, settings: CompileSettings) -> dict[torch.fx.Node, tuple[NodeKind, str]]:
    """Each call_function node: engine, torch (with the reason) or scalar (size arithmetic)."""
    kinds: dict[torch.fx.Node, tuple[NodeKind, str]] = {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        if node.op != "call_function":
            kinds[node] = ("torch", f"{node.op} nodes run in PyTorch")
            continue
        target = node.target
        if target is operator.getitem and isinstance(node.args[0], torch.fx.Node) and node.args[0] in kinds:
            kinds[node] = kinds[node.args[0]]
            continue
        if not _is_tensor_valued(node):
            if getattr(target, "overloadpacket", None) in DATA_DEPENDENT:
                kinds[node] = ("torch", "reads tensor data on the host")
            elif any(kinds.get(a, ("scalar",))[0] == "torch" for a in node.all_input_nodes if not _is_tensor_valued(a)):
                kinds[node] = ("torch", "computed from a value read on the host")
            else:
                kinds[node] = ("scalar", "size arithmetic")
            continue
        if _matches(node, settings.torch_executed_ops):
            kinds[node] = ("torch", "listed in torch_executed_ops")
        elif isinstance(target, torch._ops.HigherOrderOperator):
            kinds[node] = ("torch", "higher-order op (control flow) runs in PyTorch")
        elif not isinstance(target, torch._ops.OpOverload):
            kinds[node] = ("torch", "not an ATen op")
        elif target.namespace not in ("aten", "prims"):
            kinds[node] = ("torch", f"custom op of namespace {target.namespace!r}")
        elif target.overloadpacket in DATA_DEPENDENT or target == _REPEAT_INTERLEAVE_DATA:
            kinds[node] = ("torch", "output shape depends on tensor data")
        elif target.overloadpacket is _aten.index and _has_bool_index(node):
            kinds[node] = ("torch", "boolean-mask indexing: output shape depends on tensor data")
        elif any(kinds.get(a, ("x",))[0] == "torch" and not _is_tensor_valued(a) for a in node.all_input_nodes):
            kinds[node] = ("torch", "uses a value read from a tensor on the host")
        else:
            kinds[node] = ("engine", "")
    return kinds


def _has_bool_index(node: torch.fx.Node) -> bool:
    indices = node.args[1] if len(node.args) > 1 else []
    for idx in indices or []:
        val = idx.meta.get("val") if isinstance(idx, torch.fx.Node) else None
        if isinstance(val, torch.Tensor) and val.dtype in (torch.bool, torch.uint8):
            return True
    return False


class _Support(OperatorSupportBase):
    def __init__(self, kinds: dict[torch.fx.Node, tuple[NodeKind, str]]) -> None:
        self.kinds = kinds

    def is_node_supported(self, submodules: Any, node: torch.fx.Node) -> bool:
        return self.kinds.get(node, ("torch",))[0] in ("engine", "scalar")


@dataclasses.dataclass
class SegmentPlan:
    """One segment: a standalone GraphModule whose inputs and outputs are named env values."""

    index: int
    kind: Kind
    module: torch.fx.GraphModule
    inputs: list[str]
    outputs: list[str]
    ops: dict[str, int]
    reasons: dict[str, str]

    @property
    def num_ops(self) -> int:
        return sum(self.ops.values())




@dataclasses.dataclass
class PartitionPlan:
    inputs: list[str]
    outputs: list[OutputRef]
    segments: list[SegmentPlan]
    constants: dict[str, torch.Tensor]

    @property
    def report(self) -> PartitionReport:
        return PartitionReport.from_segments(self.segments)


@dataclasses.dataclass(frozen=True)
class SegmentSummary:
    index: int
    kind: Kind
    ops: dict[str, int]
    reasons: dict[str, str]

    @property
    def num_ops(self) -> int:
        return sum(self.ops.values())


@dataclasses.dataclass(frozen=True)
class PartitionReport:
    """What `dryrun` prints and `flexrt inspect` shows: segments, their ops, and why ops fell back."""

    segments: list[SegmentSummary]

    @classmethod
    def from_segments(cls, segments: Iterable[SegmentPlan]) -> PartitionReport:
        return cls([SegmentSummary(s.index, s.kind, dict(s.ops), dict(s.reasons)) for s in segments])

    @property
    def engine_ops(self) -> int:
        return sum(s.num_ops for s in self.segments if s.kind == "engine")

    @property
    def torch_ops(self) -> int:
        return sum(s.num_ops for s in self.segments if s.kind == "torch")

    def to_json(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(s) for s in self.segments]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> PartitionReport:
        return cls([SegmentSummary(**d) for d in data])

    def __str__(self) -> str:
        total = self.engine_ops + self.torch_ops
        lines = [
            f"Partition: {sum(s.kind == 'engine' for s in self.segments)} engine segment(s), "
            f"{sum(s.kind == 'torch' for s in self.segments)} PyTorch segment(s); "
            f"{self.engine_ops} of {total} ops in engines"
        ]
        for s in self.segments:
            top = ", ".join(f"{k} x{v}" for k, v in sorted(s.ops.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
            lines.append(f"  segment {s.index} [{s.kind}] {s.num_ops} ops: {top}")
            for op, why in sorted(s.reasons.items()):
                lines.append(f"      {op}: {why}")
        return "\n".join(lines)


def _count_ops(nodes: Iterable[torch.fx.Node], kinds: dict[torch.fx.Node, tuple[NodeKind, str]]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for n in nodes:
        if kinds.get(n, ("scalar",))[0] != "scalar" and n.target is not operator.getitem:
            counts[op_name(n)] += 1
    return dict(counts)


def _topo_units(units: list[set[torch.fx.Node]], order: dict[torch.fx.Node, int], unit_of: dict[torch.fx.Node, int]) -> list[int]:
    """Order units so every unit follows its producers; ties go to the earliest original node."""

    def producers(node: torch.fx.Node, seen: set[torch.fx.Node]) -> set[int]:
        out: set[int] = set()
        for a in node.all_input_nodes:
            if a in seen:
                continue
            seen.add(a)
            if a in unit_of:
                out.add(unit_of[a])
            elif a.op == "call_function":  # a free scalar node: look through it
                out |= producers(a, seen)
        return out

    deps = [set() for _ in units]
    for i, unit in enumerate(units):
        for n in unit:
            deps[i] |= producers(n, set())
        deps[i].discard(i)
    first = [min(order[n] for n in u) for u in units]
    done: list[int] = []
    placed: set[int] = set()
    while len(done) < len(units):
        ready = [i for i in range(len(units)) if i not in placed and deps[i] <= placed]
        if not ready:
            raise UnsupportedOpError("partition: segments depend on each other in a cycle; please report this model")
        nxt = min(ready, key=lambda i: first[i])
        done.append(nxt)
        placed.add(nxt)
    return done


def _copy_attr(root: torch.nn.Module, gm: torch.nn.Module, target: str) -> str:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    name = "w_" + target.replace(".", "_")
    if isinstance(value, torch.Tensor):
        if name not in root._buffers:
            root.register_buffer(name, value.detach())
    else:
        setattr(root, name, value)
    return name


def _build_module(
    gm: torch.fx.GraphModule, nodes: list[torch.fx.Node], inputs: list[torch.fx.Node], outputs: list[torch.fx.Node]
) -> torch.fx.GraphModule:
    graph = torch.fx.Graph()
    root = torch.nn.Module()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for n in inputs:
        p = graph.placeholder(n.name)
        p.meta = dict(n.meta)
        env[n] = p
    for n in nodes:
        for a in n.all_input_nodes:
            if a.op == "get_attr" and a not in env:
                env[a] = graph.get_attr(_copy_attr(root, gm, str(a.target)))
                env[a].meta = dict(a.meta)
        env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(tuple(env[o] for o in outputs))
    module = torch.fx.GraphModule(root, graph)
    return module


def partition(gm: torch.fx.GraphModule, settings: CompileSettings) -> PartitionPlan:
    """Split the lowered graph into engine and PyTorch segments."""
    kinds = classify(gm, settings)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    torch_nodes = [n for n, (k, _) in kinds.items() if k == "torch"]
    if torch_nodes and settings.require_full_compilation:
        why = "; ".join(sorted({f"{op_name(n)} ({kinds[n][1]})" for n in torch_nodes}))
        raise UnsupportedOpError(
            f"require_full_compilation=True but these ops must run in PyTorch: {why}. "
            "Set require_full_compilation=False to run them in PyTorch between engines."
        )
    demoted: dict[torch.fx.Node, str] = {}
    if not torch_nodes:
        everything = {n for n, (k, _) in kinds.items() if k in ("engine", "scalar")}
        engine_sets = [everything] if everything else []  # a model with no ops (`return x`) has no segment
    else:
        proposed = CapabilityBasedPartitioner(gm, _Support(kinds), allows_single_node_partition=True).propose_partitions()
        engine_sets = []
        for part in proposed:
            nodes = set(part.nodes)
            size = sum(1 for n in nodes if kinds[n][0] == "engine" and n.target is not operator.getitem)
            if size == 0:
                continue
            if size < settings.min_block_size:
                for n in nodes:
                    if kinds[n][0] == "engine":
                        demoted[n] = f"in a segment of {size} ops, fewer than min_block_size={settings.min_block_size}"
                continue
            engine_sets.append(nodes)
    in_engine = set().union(*engine_sets) if engine_sets else set()
    loose = [n for n in gm.graph.nodes if n in kinds and n not in in_engine and kinds[n][0] != "scalar"]
    units = [set(s) for s in engine_sets] + [{n} for n in loose]
    unit_kind: list[Kind] = ["engine"] * len(engine_sets) + ["torch"] * len(loose)
    unit_of = {n: i for i, u in enumerate(units) for n in u}
    ordered = _topo_units(units, order, unit_of)
    groups: list[tuple[Kind, set[torch.fx.Node]]] = []
    for i in ordered:
        if groups and unit_kind[i] == "torch" and groups[-1][0] == "torch":
            groups[-1][1].update(units[i])
        else:
            groups.append((unit_kind[i], set(units[i])))
    return _assemble(gm, kinds, demoted, groups, order)


def _assemble(
    gm: torch.fx.GraphModule,
    kinds: dict[torch.fx.Node, tuple[NodeKind, str]],
    demoted: dict[torch.fx.Node, str],
    groups: list[tuple[Kind, set[torch.fx.Node]]],
    order: dict[torch.fx.Node, int],
) -> PartitionPlan:
    producer: dict[torch.fx.Node, int] = {}
    for gi, (_, core) in enumerate(groups):
        for n in core:
            if kinds[n][0] != "scalar":
                producer[n] = gi
    expanded: list[set[torch.fx.Node]] = []
    for _, core in groups:
        nodes = set(core)
        stack = list(nodes)
        while stack:
            n = stack.pop()
            for a in n.all_input_nodes:
                if a not in nodes and kinds.get(a, ("x",))[0] == "scalar":
                    nodes.add(a)
                    stack.append(a)
        expanded.append(nodes)
    seg_inputs: list[list[torch.fx.Node]] = []
    needed: dict[int, set[torch.fx.Node]] = collections.defaultdict(set)
    for nodes in expanded:
        ins = sorted(
            {a for n in nodes for a in n.all_input_nodes if a not in nodes and a.op != "get_attr"}, key=order.__getitem__
        )
        seg_inputs.append(ins)
        for a in ins:
            if a in producer:
                needed[producer[a]].add(a)
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    flat_out = output_node.args[0]
    flat_out = list(flat_out) if isinstance(flat_out, (tuple, list)) else [flat_out]
    constants: dict[str, torch.Tensor] = {}
    outputs: list[OutputRef] = []
    for o in flat_out:
        if isinstance(o, torch.fx.Node):
            if o.op == "get_attr":
                value = gm
                for part in str(o.target).split("."):
                    value = getattr(value, part)
                constants[o.name] = value
            elif o in producer:
                needed[producer[o]].add(o)
            outputs.append(("value", o.name))
        else:
            outputs.append(("const", o))
    segments = []
    for gi, ((kind, core), nodes) in enumerate(zip(groups, expanded)):
        outs = sorted(needed[gi], key=order.__getitem__)
        body = sorted(nodes, key=order.__getitem__)
        module = _build_module(gm, body, seg_inputs[gi], outs)
        reasons = {}
        if kind == "torch":
            for n in sorted(core, key=order.__getitem__):  # graph order: the report reads the same every run
                why = demoted.get(n) or kinds[n][1]
                if why and n.target is not operator.getitem:
                    reasons[op_name(n)] = why
        segments.append(SegmentPlan(gi, kind, module, [a.name for a in seg_inputs[gi]], [o.name for o in outs], _count_ops(sorted(core, key=order.__getitem__), kinds), reasons))
    inputs = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    plan = PartitionPlan(inputs, outputs, segments, constants)
    logger.debug("partition:\n%s", plan.report)
    return plan
