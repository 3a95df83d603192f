"""`torch.compile(model, backend="flexrt")`: dynamo captures graphs, flexrt builds their engines.

Each captured graph becomes one engine whose profile is the range dynamo knows for each dynamic
dim (`torch._dynamo.mark_dynamic(x, 0, min=1, max=8)`), tuned at the shapes of the first call.
Later calls with any shape in that range hit the same dynamo graph and the same engine; a shape
outside it fails dynamo's guards and recompiles, as plain torch.compile does. Weights are frozen
into the engine at compile time (as Inductor's `freezing` does); a call after they changed raises.
Training-mode graphs and inputs that require gradients run in PyTorch, with a warning; under grad
mode with weights that require grad the engine runs and a backward through its outputs raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import sympy
import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

from flexrt.errors import CompilationError, FlexrtError, InputSpecError
from flexrt.settings import parse_options
from flexrt.spec import UNBOUNDED, Input, finite_or, resolve_profiles
from flexrt.trace import FlatInputs, trace

logger = logging.getLogger(__name__)

BACKEND_NAME = "flexrt"


@dataclasses.dataclass(frozen=True)
class _Role:
    """What a dynamo placeholder is: a user tensor, a frozen weight, or a size of a user tensor.

    A size that is no tensor input's (a length a previous piece of a split model computed) is read
    off a carrier: an engine input of that length whose contents are never read.
    """

    kind: str  # "user" | "const" | "size" | "int" (a fixed number: index is its value)
    index: int = 0
    dim: int = 0


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How dynamo's placeholders and outputs map onto the engine's tensors."""

    roles: list[_Role]
    consts: list[torch.Tensor]
    specs: list[Input]
    user_positions: list[int]  # per engine input: the dynamo argument it comes from
    carriers: frozenset[int]  # engine inputs made from a dynamo integer argument (a size carrier)
    int_outputs: dict[int, sympy.Expr]  # graph outputs that are sizes: their value from the inputs' sizes
    symbols: dict[sympy.Symbol, tuple[int, int]]  # symbol -> (engine input, dim) that holds it


class _FrozenGraph(torch.nn.Module):
    """The dynamo graph as a module of the user's tensors only: weights become buffers, sizes are read
    off the tensors. This is what flexrt exports and compiles."""

    def __init__(self, gm: torch.fx.GraphModule, roles: Sequence[_Role], consts: Sequence[torch.Tensor],
                 int_outputs: Sequence[int] = ()) -> None:
        super().__init__()
        self.gm = gm
        self.roles = list(roles)
        self.int_outputs = frozenset(int_outputs)
        for i, t in enumerate(consts):
            self.register_buffer(f"c{i}", t.detach(), persistent=False)

    def forward(self, *tensors: torch.Tensor) -> Any:
        args: list[Any] = []
        for r in self.roles:
            if r.kind == "user":
                args.append(tensors[r.index])
            elif r.kind == "const":
                args.append(getattr(self, f"c{r.index}"))
            elif r.kind == "int":
                args.append(r.index)
            else:
                args.append(tensors[r.index].shape[r.dim])
        out = self.gm(*args)
        if self.int_outputs:  # sizes are computed by _CompiledGraph from the inputs' sizes, not by the engine
            return tuple(o for i, o in enumerate(out) if i not in self.int_outputs)
        return out


def _source_name(node: torch.fx.Node) -> str:
    """Where dynamo found a graph input, as it writes it (L['x'], L['self']._parameters['weight'])."""
    source = getattr(node.meta.get("grapharg"), "source", None)
    name = getattr(source, "name", "")  # a method on torch 2.11, a property on 2.13
    return name() if callable(name) else str(name)


def _is_weight(node: torch.fx.Node, value: Any) -> bool:
    if isinstance(value, torch.nn.Parameter):
        return True
    name = _source_name(node)
    return isinstance(value, torch.Tensor) and ("._parameters[" in name or "._buffers[" in name)


def _training_ops(gm: torch.fx.GraphModule) -> list[str]:
    found = []
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.kwargs.get("training") is True:
            found.append(getattr(n.target, "__name__", str(n.target)))
        if n.op == "call_module" and getattr(gm.get_submodule(str(n.target)), "training", False):
            found.append(str(n.target))
    return found


def _expr(size: torch.SymInt) -> sympy.Expr:
    """A size's expression after what dynamo learned tracing the whole graph: a symbol it specialised
    later (a guard `s == 15`) is that number, one it found equal to another is the other."""
    return size.node.shape_env.replace(size.node.expr)


def _dim_range(size: Any) -> tuple[int, int] | None:
    """(lo, hi) of a symbolic size from dynamo's shape env; None when static."""
    if not isinstance(size, torch.SymInt):
        return None
    expr = _expr(size)
    if expr.is_number:
        return None
    from torch.utils._sympy.value_ranges import bound_sympy

    vr = bound_sympy(expr, size.node.shape_env.var_to_range)
    lo, hi = max(finite_or(vr.lower, 0), 0), finite_or(vr.upper, UNBOUNDED)
    if lo == 2:  # dynamo reports a backed size's lower bound as 2 even when mark_dynamic(min=1) admits 1
        lo = 1
    return lo, min(hi, UNBOUNDED)


def _plan(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> _Plan:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    roles: list[_Role] = []
    consts: list[torch.Tensor] = []
    specs: list[Input] = []
    user_positions: list[int] = []
    carriers: set[int] = set()
    symbol_at: dict[sympy.Expr, tuple[int, int]] = {}
    pending: list[tuple[int, Any]] = []
    for pos, (node, value) in enumerate(zip(placeholders, example_inputs)):
        fake = node.meta.get("example_value", value)
        if isinstance(value, torch.Tensor) and _is_weight(node, value):
            roles.append(_Role("const", len(consts)))
            consts.append(value)
        elif isinstance(value, torch.Tensor):
            k = len(specs)
            shape = tuple(int(s) for s in value.shape)
            lo, hi = list(shape), list(shape)
            for d, size in enumerate(getattr(fake, "shape", ())):
                r = _dim_range(size)
                if r is not None:
                    lo[d], hi[d] = r
                    symbol_at.setdefault(_expr(size), (k, d))
            specs.append(Input(min_shape=lo, opt_shape=[min(max(o, a), b) for o, a, b in zip(shape, lo, hi)],
                               max_shape=hi, dtype=value.dtype, name=node.name))
            roles.append(_Role("user", k))
            user_positions.append(pos)
        else:
            pending.append((pos, fake))
            roles.append(_Role("size"))
    for slot, fake in pending:
        expr = _expr(fake) if isinstance(fake, torch.SymInt) else None
        if expr is not None and expr.is_number:  # a number dynamo specialised (a batch of 1) but still passes
            roles[slot] = _Role("int", int(expr))
            continue
        if expr is not None and expr not in symbol_at and isinstance(expr, sympy.Symbol):
            symbol_at[expr] = (len(specs), 0)  # a size no tensor input has: carried by a tensor of that length
            hint = _hint(example_inputs[slot])
            lo, hi = _dim_range(fake) or (hint, hint)
            specs.append(Input(min_shape=[lo], opt_shape=[min(max(hint, lo), hi)], max_shape=[hi],
                               dtype=torch.uint8, name=placeholders[slot].name))
            carriers.add(len(user_positions))
            user_positions.append(slot)
        if expr is None or expr not in symbol_at:
            raise CompilationError(
                f"backend: graph input {placeholders[slot].name!r} is a Python number that is not a size of a tensor "
                "input; flexrt engines take tensors"
            )
        k, d = symbol_at[expr]
        roles[slot] = _Role("size", k, d)
    return _Plan(roles, consts, specs, user_positions, frozenset(carriers), _int_outputs(gm, symbol_at),
                 {e: kd for e, kd in symbol_at.items() if isinstance(e, sympy.Symbol)})


def _hint(value: Any) -> int:
    """A dynamo integer input's example value, without int() on a SymInt (that would guard on it and
    specialise the graph to this one value)."""
    return int(value.node.hint) if isinstance(value, torch.SymInt) else int(value)


def _int_outputs(gm: torch.fx.GraphModule, symbol_at: Mapping[sympy.Expr, tuple[int, int]]) -> dict[int, sympy.Expr]:
    """Graph outputs that are integers (a size the next piece of a split model needs), as expressions in
    the inputs' sizes: an engine returns tensors only."""
    (out,) = gm.graph.find_nodes(op="output")
    found: dict[int, sympy.Expr] = {}
    for i, node in enumerate(out.args[0] if isinstance(out.args[0], (tuple, list)) else ()):
        value = node.meta.get("example_value") if isinstance(node, torch.fx.Node) else node
        if isinstance(value, (torch.SymInt, int)) and not isinstance(value, bool):
            expr = _expr(value) if isinstance(value, torch.SymInt) else sympy.Integer(value)
            unknown = [s for s in expr.free_symbols if s not in symbol_at]
            if unknown:
                raise CompilationError(
                    f"backend: graph output {i} is the number {expr}, which is not a function of the inputs' sizes "
                    f"({', '.join(map(str, unknown))} is computed from tensor data); flexrt engines return tensors"
                )
            found[i] = expr
    return found


class _InferenceOnly(torch.autograd.Function):
    """Marks engine outputs computed under grad mode: backward through them is a clear error."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, *outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.view_as(t) for t in outputs)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise FlexrtError(
            "cannot backpropagate through a flexrt engine: engines are inference-only. Call the model under "
            "torch.no_grad() for inference, or train it without the flexrt backend"
        )


class _CompiledGraph:
    """The callable handed back to dynamo: user tensors in, the graph's outputs out.

    Dynamo reuses one graph for every module of the same code (inlined nn modules: the twelve
    encoder layers of a model split at a branch inside the layer), passing each its own weights. The
    engine has the first module's weights frozen in; another module's get a refitted copy of it, kept
    by the identity of their weight tensors (nothing is rebuilt). A weight changed in place is an error.
    """

    def __init__(self, module: Any, plan: _Plan, frozen: _FrozenGraph, device: torch.device) -> None:
        self.module = module
        self.plan = plan
        self.const_positions = [i for i, r in enumerate(plan.roles) if r.kind == "const"]
        self.frozen = frozen
        self.device = device
        self.by_weights: list[tuple[list[torch.Tensor], list[int], Any]] = [
            (list(plan.consts), [c._version for c in plan.consts], module)]
        # weights that require grad, compiled under grad mode: outputs must refuse backward loudly
        self.anchor = next((c for c in plan.consts if c.requires_grad), None) if torch.is_grad_enabled() else None

    def _module_for(self, weights: list[Any]) -> Any:
        for consts, versions, module in self.by_weights:
            if all(w is c for w, c in zip(weights, consts)):
                if any(c._version != v for c, v in zip(consts, versions)):
                    raise FlexrtError(
                        "a weight changed after torch.compile built its flexrt engine (weights are frozen into engines); "
                        "call torch._dynamo.reset() and run again to rebuild"
                    )
                return module
        from flexrt.refit import refit_module_weights

        new = _FrozenGraph(self.frozen.gm, self.frozen.roles, weights, self.frozen.int_outputs).eval()
        module = refit_module_weights(self.module, new, in_place=False)
        self.by_weights.append((list(weights), [w._version for w in weights], module))
        logger.info("flexrt backend: the graph runs another module's weights: refitted copy %d", len(self.by_weights))
        return module

    def _inputs(self, args: Sequence[Any]) -> list[torch.Tensor]:
        """The engine's inputs from dynamo's arguments; a carried size becomes a tensor of that length."""
        if not self.plan.carriers:
            return [args[p] for p in self.plan.user_positions]
        return [torch.empty(int(args[p]), dtype=torch.uint8, device=self.device) if k in self.plan.carriers else args[p]
                for k, p in enumerate(self.plan.user_positions)]

    def _with_int_outputs(self, inputs: Sequence[torch.Tensor], out: Any) -> Any:
        """Put back the size outputs the engine does not compute, evaluated from the inputs' sizes."""
        values = {sym: int(inputs[k].shape[d]) for sym, (k, d) in self.plan.symbols.items()}
        tensors = iter(out)
        n = len(self.plan.int_outputs) + len(out)
        return tuple(int(self.plan.int_outputs[i].xreplace(values)) if i in self.plan.int_outputs else next(tensors)
                     for i in range(n))

    def __call__(self, *args: Any) -> Any:
        module = self._module_for([args[p] for p in self.const_positions])
        inputs = self._inputs(args)
        out = module(*inputs)
        if self.plan.int_outputs:
            out = self._with_int_outputs(inputs, out)
        if self.anchor is not None and torch.is_grad_enabled():
            flat, spec = torch.utils._pytree.tree_flatten(out)
            tensors = [i for i, t in enumerate(flat) if isinstance(t, torch.Tensor)]
            marked = _InferenceOnly.apply(self.anchor, *[flat[i] for i in tensors])
            for i, t in zip(tensors, marked):
                flat[i] = t
            out = torch.utils._pytree.tree_unflatten(flat, spec)
        return out


@contextlib.contextmanager
def size_oblivious() -> Iterator[None]:
    """Dynamo with `backed_size_oblivious`: a dim marked dynamic is not specialised at sizes 0 and 1.

    Without it dynamo specialises them: `mark_dynamic(x, 0, min=1, max=8)` on a batch of 2 guards
    `2 <= x.size()[0] <= 8`, so batch 1 recompiles; on a batch of 1 it raises ConstraintViolationError.
    Set only around flexrt's own torch.compile calls (ir="torch_compile"): process-wide it would change
    every other torch.compile. Set and restored by hand: 13 us a call on a 2-core CPU, `config.patch` 33 us. Does
    nothing on a torch without the option.
    """
    config = torch.fx.experimental._config
    if not _has_size_oblivious():
        yield
        return
    old = config.backed_size_oblivious
    config.backed_size_oblivious = True
    try:
        yield
    finally:
        config.backed_size_oblivious = old


@functools.cache
def _has_size_oblivious() -> bool:
    return "backed_size_oblivious" in torch.fx.experimental._config.get_config_copy()


def specialised_mark_error(name: str, dim: int, size: int) -> InputSpecError:
    return InputSpecError(
        f"input {name} dim {dim} has size {size} and is marked dynamic, but torch.compile specialises sizes 0 and 1: "
        "mark a tensor whose size there is at least 2 (the range may still start at 1), run under "
        "torch.fx.experimental._config.patch(backed_size_oblivious=True), or use flexrt.compile(model, "
        "ir='torch_compile', inputs=[...]), which does"
    )


def _check_marks(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """A dim the user marked dynamic that dynamo made static (size 0 or 1): dynamo raises a
    ConstraintViolationError only after the backend returns, so fail before building an engine."""
    for node, value in zip(gm.graph.find_nodes(op="placeholder"), example_inputs):
        fake = node.meta.get("example_value")
        for d in sorted(getattr(value, "_dynamo_dynamic_indices", ())):
            if isinstance(fake, torch.Tensor) and d < fake.dim() and not isinstance(fake.shape[d], torch.SymInt):
                raise specialised_mark_error(_source_name(node) or repr(node.name), d, int(fake.shape[d]))


def flexrt_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """The dynamo backend: one engine per captured graph, over the graph's dynamic ranges."""
    from flexrt.compiler.fallback import CompilerFallback
    from flexrt.compiler.pipeline import build_from_traced
    from flexrt.runtime import CompiledModule

    _check_marks(gm, example_inputs)
    options = dict(options or {})
    tensors = [t for t in example_inputs if isinstance(t, torch.Tensor)]
    training = _training_ops(gm)
    user_grads = torch.is_grad_enabled() and any(
        t.requires_grad for t, n in zip(example_inputs, gm.graph.find_nodes(op="placeholder"))
        if isinstance(t, torch.Tensor) and not _is_weight(n, t)
    )
    if training or user_grads:
        why = f"it runs ops in training mode ({', '.join(sorted(set(training))[:4])})" if training else "inputs require gradients"
        logger.warning("flexrt: running a captured graph in PyTorch because %s; engines are inference-only", why)
        return gm.forward
    device = tensors[0].device if tensors else None
    settings, runtime = parse_options(options, device=device)
    try:
        graph_plan = _plan(gm, example_inputs)
        specs = graph_plan.specs
        frozen = _FrozenGraph(gm, graph_plan.roles, graph_plan.consts, graph_plan.int_outputs).eval()
        names = [s.name or f"in{i}" for i, s in enumerate(specs)]
        flat = FlatInputs(tuple(specs), {}, names, specs)
        # build outside dynamo's tracing context: its fake mode must not leak into export/Inductor
        with torch._guards.tracing(None), unset_fake_temporarily():
            traced = trace(frozen, flat, settings.device)
            profiles = resolve_profiles(names, specs, None)
            engine, lowered, plan = build_from_traced(traced, profiles, settings, runtime)
    except FlexrtError as e:
        if settings.on_build_failure == "eager":
            logger.warning("flexrt: could not build this graph (%s); running it in PyTorch (on_build_failure='eager')", e)
            return gm.forward
        raise
    module = CompiledModule(engine, CompilerFallback(traced, settings, lowered, plan))
    logger.info("flexrt backend: built an engine for a graph of %d inputs, profile %s", len(specs), profiles[0])
    return _CompiledGraph(module, graph_plan, frozen, settings.device)


def register() -> None:
    """Register "flexrt" with dynamo, and Torch-TensorRT's "tensorrt" and "torch_tensorrt" unless the
    real torch_tensorrt is installed (`backend_alias`); names dynamo knows already are left alone.

    An installed flexrt is found by torch.compile through its `torch_dynamo_backends` entry points
    without being imported. `import flexrt` calls this only when torch._dynamo is already loaded:
    importing dynamo costs 1.3 s of a 1.9 s `import flexrt` on a 2-core CPU, and loading a saved
    artifact needs none of it. `compile(ir="torch_compile")` calls it before torch.compile.
    """
    from torch._dynamo import list_backends, register_backend

    from flexrt.backend_alias import ALIASES, real_torch_tensorrt

    known = set(list_backends(exclude_tags=()))
    for name in (BACKEND_NAME, *(() if real_torch_tensorrt() else ALIASES)):
        if name not in known:
            register_backend(flexrt_backend, name=name)


class TorchCompiledModule(torch.nn.Module):
    """`flexrt.compile(..., ir="torch_compile")`: torch.compile with the flexrt backend; dynamic
    `Input` ranges are applied with mark_dynamic to the first call's tensors."""

    def __init__(self, model: torch.nn.Module, specs: Sequence[Input], kw_specs: Mapping[str, Input], options: Mapping[str, Any],
                 dynamic: bool | None = None) -> None:
        super().__init__()
        register()  # a source tree is not installed: no entry point
        self.compiled = torch.compile(model, backend=BACKEND_NAME, options=dict(options), dynamic=dynamic)
        self.dynamic = dynamic
        self.specs = list(specs)
        self.kw_specs = dict(kw_specs)
        self._marked = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self._marked:
            pairs = list(zip(args, self.specs)) + [(kwargs[k], s) for k, s in self.kw_specs.items() if k in kwargs]
            for t, spec in pairs:
                if isinstance(t, torch.Tensor) and spec.range.rank == t.dim():
                    for d in spec.range.dynamic_dims:
                        if not self.dynamic or t.shape[d] > 1:  # dynamic=True specialises 0 and 1 (below)
                            torch._dynamo.mark_dynamic(t, d, min=spec.range.min[d], max=spec.range.max[d])
            self._marked = True
        # batch 1 runs in the graph of a range that starts at 1 (see size_oblivious). Not with dynamic=True:
        # every dim of every graph is symbolic there, and a size-1 broadcast dim (an attention mask's heads)
        # must stay 1; sizes 1 then get their own graphs. Python floats stay constants (dynamo would pass
        # an attention scale as a tensor to `.item()`)
        if self.dynamic:
            with torch._dynamo.config.patch(specialize_float=True):
                return self.compiled(*args, **kwargs)
        with size_oblivious():
            return self.compiled(*args, **kwargs)


def compile_with_torch_compile(
    model: torch.nn.Module, inputs: Any = None, arg_inputs: Any = None, kwarg_inputs: Any = None,
    dynamic: bool | None = None, **options: Any
) -> torch.nn.Module:
    """Return the model under torch.compile(backend="flexrt"); compilation happens at the first call.
    `dynamic` is torch.compile's: True makes every dim of every graph's inputs start symbolic."""
    parse_options(options)  # fail on a bad option now, not at the first call
    given = arg_inputs if arg_inputs is not None else inputs
    if isinstance(given, (Input, torch.Tensor)):
        given = [given]
    specs = [g for g in (given or []) if isinstance(g, Input)]
    kw_specs = {k: v for k, v in (kwarg_inputs or {}).items() if isinstance(v, Input)}
    if any(s.profiles for s in [*specs, *kw_specs.values()]):
        raise InputSpecError(
            "Input(profiles=[...]) needs ir='dynamo': torch.compile compiles one range per graph, dynamo's; "
            "compile with flexrt.compile(model, ir='dynamo', inputs=...) to get one module holding every profile"
        )
    return TorchCompiledModule(model, specs, kw_specs, options, dynamic)
