"""`refit_module_weights`: the compiled engines run new weights, nothing is built.

AOTInductor engines keep their weights as named constants, and their runners take new ones
(`update_constant_buffer`). The new values come from the new module lowered exactly as the
compiled one was (`relower.py`), segment by segment; they are kept with the engine's state, so a
refitted module saves them and a load applies them over the ones packaged in the shared objects.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch.export import ExportedProgram

from flexrt.compiler.fallback import CompilerFallback
from flexrt.errors import RefitError
from flexrt.ir import EngineState, ProgramState
from flexrt.partition import PartitionPlan
from flexrt.refit.relower import relower
from flexrt.refit.verify import verify
from flexrt.runtime import CompiledModule, Engine
from flexrt.serialize.load import Artifact

logger = logging.getLogger(__name__)


def _attr(module: torch.nn.Module, fqn: str, what: str) -> torch.Tensor:
    try:
        value = operator.attrgetter(fqn)(module)
    except AttributeError:
        raise RefitError(f"refit: {what} has no weight {fqn!r} in the new module; is it the same architecture?") from None
    if not isinstance(value, torch.Tensor):
        raise RefitError(f"refit: {what}: {fqn!r} is not a tensor in the new module")
    return value.detach()


def _same_layout(old: torch.Tensor, new: torch.Tensor, name: str, what: str) -> torch.Tensor:
    if old.shape != new.shape or old.dtype != new.dtype:
        raise RefitError(
            f"refit: {what}: weight {name!r} is {tuple(new.shape)} {new.dtype} in the new module but "
            f"{tuple(old.shape)} {old.dtype} in the compiled one; refit needs the same architecture"
        )
    new = new.to(old.device)
    if new.stride() != old.stride():  # the engine reads its constants with the strides it was built with
        new = torch.empty_strided(old.shape, old.stride(), dtype=old.dtype, device=old.device).copy_(new)
    return new


def _engine_weights(runner: Any, module: torch.nn.Module, what: str) -> dict[str, torch.Tensor]:
    """Every constant of one engine, by its constant name, taken from the new segment module."""
    fqns: Mapping[str, str] = runner.get_constant_names_to_original_fqns()
    old = runner.extract_constants_map(False)  # keyed by original FQN
    weights = {name: _same_layout(old[fqn], _attr(module, fqn, what), fqn, what) for name, fqn in fqns.items()}
    covered = set(fqns.values())
    uncovered = sorted(
        str(n.target) for n in module.graph.nodes if n.op == "get_attr" and str(n.target) not in covered
    )
    if uncovered:
        raise RefitError(
            f"refit: {what} has weights compiled into its code rather than kept as constants ({uncovered[:5]}); "
            "it was built by an older flexrt: compile it once more to make it refittable"
        )
    return weights


def _torch_program(ep: ExportedProgram, module: torch.nn.Module, what: str) -> ExportedProgram:
    """A PyTorch segment's program with the new module's tensors in its state."""
    state = {k: _same_layout(v, _attr(module, k, what), k, what) for k, v in ep.state_dict.items()}
    constants = {
        k: _same_layout(v, _attr(module, k, what), k, what) if isinstance(v, torch.Tensor) else v
        for k, v in ep.constants.items()
    }
    return ExportedProgram(
        root=ep.graph_module, graph=ep.graph, graph_signature=ep.graph_signature, state_dict=state,
        range_constraints=ep.range_constraints, module_call_graph=ep.module_call_graph,
        example_inputs=ep.example_inputs, constants=constants,
    )


def _check_structure(program: ProgramState, plan: PartitionPlan, k: int) -> None:
    # the wiring, not the kinds: an engine whose build failed runs in PyTorch (on_build_failure='eager')
    old = [(s.inputs, s.outputs) for s in program.segments]
    new = [(s.inputs, s.outputs) for s in plan.segments]
    if old != new or program.inputs != plan.inputs or program.outputs != plan.outputs:
        raise RefitError(
            f"refit: profile {k}: the new module lowers to a different graph ({len(new)} segment(s) against "
            f"{len(old)}, or other values between them); refit needs the same architecture"
        )


def refitted_state(engine: Engine, plan: PartitionPlan) -> EngineState:
    """The engine's state with every weight taken from `plan`; the engine itself is left as it is."""
    programs = []
    for k, (program, runtime) in enumerate(zip(engine.state.programs, engine.programs)):
        _check_structure(program, plan, k)
        segments = []
        for i, (seg, new) in enumerate(zip(program.segments, plan.segments)):
            what = f"segment {i} of profile {k}"
            if seg.kind == "engine":
                weights = _engine_weights(runtime.segments[i].runner, new.module, what)
                segments.append(dataclasses.replace(seg, weights=weights))
            else:
                assert seg.program is not None
                segments.append(dataclasses.replace(seg, program=_torch_program(seg.program, new.module, what)))
        missing = sorted(set(program.constants) - set(plan.constants))
        if missing:
            raise RefitError(f"refit: profile {k}: the new module does not return the constants {missing}")
        constants = {n: _same_layout(t, plan.constants[n].detach(), n, f"profile {k}") for n, t in program.constants.items()}
        programs.append(dataclasses.replace(program, segments=segments, constants=constants))
    return dataclasses.replace(engine.state, profiles=list(engine.state.profiles), programs=programs)


def refit_module_weights(
    compiled_module: CompiledModule | Artifact,
    new_weight_module: ExportedProgram | torch.nn.Module,
    arg_inputs: tuple[Any, ...] | None = None,
    kwarg_inputs: dict[str, Any] | None = None,
    verify_output: bool = False,
    in_place: bool = False,
) -> CompiledModule:
    """`flexrt.dynamo.refit_module_weights`: the compiled module with the weights of `new_weight_module`
    (an ExportedProgram, as Torch-TensorRT takes, or an nn.Module of the same architecture).

    in_place=False returns a new module and leaves `compiled_module` as it was; in_place=True gives
    `compiled_module` the new weights and returns it. verify_output compares the result with the new
    module on `arg_inputs`/`kwarg_inputs`, or on random inputs at every profile's opt shapes.
    """
    if isinstance(compiled_module, Artifact):  # flexrt.load(path) rather than flexrt.load(path).module()
        compiled_module = compiled_module.module()
    if not isinstance(compiled_module, CompiledModule):
        raise RefitError(
            f"refit_module_weights expects a module from flexrt.compile or flexrt.load(...).module(), "
            f"got {type(compiled_module).__name__}"
        )
    start = time.perf_counter()
    engine = compiled_module.engine
    traced, gm, plan = relower(engine, new_weight_module)
    refitted = Engine(refitted_state(engine, plan), engine.options)
    fallback = CompilerFallback(traced, engine.settings, gm, plan)
    if in_place:
        compiled_module.replace_engine(refitted, fallback)
        result = compiled_module
    else:
        result = CompiledModule(refitted, fallback)
    logger.info("refit: %d engine(s) took new weights in %.2f s", _engines(refitted.state), time.perf_counter() - start)
    if verify_output:
        reference = new_weight_module.module() if isinstance(new_weight_module, ExportedProgram) else new_weight_module
        verify(result, reference, arg_inputs, kwarg_inputs)
    return result


def _engines(state: EngineState) -> int:
    return sum(1 for p in state.programs for s in p.segments if s.kind == "engine")

