"""Dynamic batching, pure: which requests may run as one call, how to stack them and split results.

Stacking is only done along dims the user declared batch-like (`--batch-dim x:0`), never guessed:
a dim being dynamic does not make rows independent. The declaration is checked against the
artifact: every input carrying a declared dim's symbol must be declared, and every output must carry
one exactly once as a whole dim (so results can be split). Declared dims may be different symbols
(a broadcast mask's); a request giving them unequal sizes runs alone, as sent.
Requests whose other dims differ are grouped apart; a stacked group must fit one profile, else it
is cut into chunks that do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch

from flexrt.errors import InputSpecError, ServingError
from flexrt.serving.protocol import ModelSignature

logger = logging.getLogger(__name__)

T = TypeVar("T")
Shapes = Mapping[str, Sequence[int]]


def parse_batch_dims(texts: Sequence[str]) -> dict[str, int]:
    """['x:0', 'mask:0'] -> {'x': 0, 'mask': 0}."""
    dims: dict[str, int] = {}
    for text in texts:
        name, sep, dim = str(text).rpartition(":")
        if not sep or not name or not re.fullmatch(r"-?[0-9]+", dim):  # str.isdigit() takes '²', which int() refuses
            raise ServingError(f"--batch-dim {text!r}: expected NAME:DIM, e.g. x:0")
        if name in dims:
            raise ServingError(f"--batch-dim: input {name!r} is given twice")
        dims[name] = int(dim)
    return dims


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Where the batch dim is in each input and output."""

    symbol: str  # the program's symbol of the first declared dim
    inputs: dict[str, int]
    outputs: dict[str, int]

    @classmethod
    def resolve(cls, signature: ModelSignature, declared: Mapping[str, int]) -> BatchPlan:
        """Check a --batch-dim declaration against the artifact; ServingError says what to change."""
        if not declared:
            raise ServingError("no batch dim declared")
        by_name = {s.name: s for s in signature.inputs}
        symbols: dict[str, str] = {}
        inputs: dict[str, int] = {}
        for name, dim in declared.items():
            if name not in by_name:
                raise ServingError(f"--batch-dim {name}:{dim}: the model has no input {name!r}; its inputs are {signature.input_names}")
            dims = by_name[name].dims
            if dim < 0:
                dim += len(dims)
            if not 0 <= dim < len(dims):
                raise ServingError(f"--batch-dim {name}:{dim}: input {name!r} has {len(dims)} dims")
            expr = dims[dim]
            if isinstance(expr, int):
                raise ServingError(
                    f"--batch-dim {name}:{dim}: that dim is static ({expr}) in the artifact; only a dynamic dim can be stacked"
                )
            if not str(expr).isidentifier():
                raise ServingError(f"--batch-dim {name}:{dim}: that dim is {expr!r}, an expression of other dims; it cannot be stacked")
            symbols[name] = str(expr)
            inputs[name] = dim
        # The declared dims may be different dims of the program (an export leaves a mask's batch dim
        # untied from the ids' when the model broadcasts it); each request must then give them equal
        # sizes to be stacked (else it runs alone, see `stackable`).
        declared_symbols = set(symbols.values())
        for spec in signature.inputs:
            where = [d for d, e in enumerate(spec.dims) if isinstance(e, str) and _free_symbols(e) & declared_symbols]
            if spec.name in inputs:
                others = [d for d in where if d != inputs[spec.name]]
                if others:
                    raise ServingError(f"--batch-dim: input {spec.name!r} also uses a batch dim at dim(s) {others}; it cannot be stacked")
            elif where:
                raise ServingError(
                    f"--batch-dim: input {spec.name!r} dim {where[0]} is the same dim of the program as a declared batch dim; "
                    f"declare it too (--batch-dim {spec.name}:{where[0]})"
                )
            else:
                raise ServingError(
                    f"--batch-dim: input {spec.name!r} has no batch dim; requests could not share one call without "
                    "mixing their values of it. Serve without --batch-dim (each request runs alone)."
                )
        outputs: dict[str, int] = {}
        for spec in signature.outputs:
            exact = [d for d, e in enumerate(spec.dims) if e in declared_symbols]
            mixed = [d for d, e in enumerate(spec.dims)
                     if isinstance(e, str) and e not in declared_symbols and _free_symbols(e) & declared_symbols]
            if len(exact) != 1 or mixed:
                raise ServingError(
                    f"--batch-dim: output {spec.name!r} has dims {list(spec.dims)}; a batched model's every output must have "
                    f"a batch dim ({', '.join(sorted(declared_symbols))}) exactly once, so that each request's rows can be "
                    "split back. Serve without --batch-dim."
                )
            outputs[spec.name] = exact[0]
        symbol = symbols[next(iter(inputs))]
        return cls(symbol, inputs, outputs)

    # -- grouping ----------------------------------------------------------------------------------

    def rows(self, shapes: Shapes) -> int:
        name, dim = next(iter(self.inputs.items()))
        return int(shapes[name][dim])

    def stackable(self, shapes: Shapes) -> bool:
        """All declared dims of a request have one size (a broadcast mask of 1 row for 3 ids does not)."""
        return len({int(shapes[n][d]) for n, d in self.inputs.items()}) == 1

    def key(self, shapes: Shapes) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Requests with equal keys differ only in their batch dim: they may be stacked."""
        key = []
        for name in sorted(shapes):
            shape = list(shapes[name])
            if name in self.inputs:
                shape[self.inputs[name]] = -1
            key.append((name, tuple(shape)))
        return tuple(key)

    def with_rows(self, shapes: Shapes, rows: int) -> dict[str, tuple[int, ...]]:
        out = {}
        for name, shape in shapes.items():
            s = list(shape)
            if name in self.inputs:
                s[self.inputs[name]] = rows
            out[name] = tuple(s)
        return out

    def plan(
        self, shapes: Sequence[Shapes], fits: Callable[[Shapes], bool], max_rows: int | None = None
    ) -> list[list[int]]:
        """Chunks of request indices: grouped by key (arrival order kept within a group), each chunk's
        stacked shapes passing `fits` (some profile holds them). A request that fits alone always gets a
        chunk; one that does not is given a chunk of its own (the caller validated it, so this is
        only reached if `fits` and validation disagree, and then the engine's own error is reported)."""
        groups: dict[Any, list[int]] = {}
        chunks: list[list[int]] = []
        for i, s in enumerate(shapes):
            if self.stackable(s):
                groups.setdefault(self.key(s), []).append(i)
            else:
                chunks.append([i])
        for members in groups.values():
            current: list[int] = []
            total = 0
            for i in members:
                n = self.rows(shapes[i])
                candidate = total + n
                ok = bool(current) and (max_rows is None or candidate <= max_rows) and fits(self.with_rows(shapes[i], candidate))
                if ok:
                    current.append(i)
                    total = candidate
                    continue
                if current:
                    chunks.append(current)
                current, total = [i], n
            if current:
                chunks.append(current)
        return chunks

    # -- stacking ----------------------------------------------------------------------------------

    def stack(self, requests: Sequence[Mapping[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Concatenate every input along its batch dim (`resolve` made sure every input has one)."""
        sizes = [self.rows({n: t.shape for n, t in r.items()}) for r in requests]
        if len(requests) == 1:
            return dict(requests[0]), sizes
        out = {name: torch.cat([r[name] for r in requests], dim=self.inputs[name]) for name in requests[0]}
        return out, sizes

    def pad(self, inputs: Mapping[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
        """Pad the batch dim with zero rows up to `rows` (results of padded rows are dropped by split)."""
        out = {}
        for name, t in inputs.items():
            if name not in self.inputs or t.shape[self.inputs[name]] >= rows:
                out[name] = t
                continue
            d = self.inputs[name]
            extra = list(t.shape)
            extra[d] = rows - t.shape[d]
            out[name] = torch.cat([t, t.new_zeros(extra)], dim=d)
        return out

    def split(self, outputs: Mapping[str, torch.Tensor], sizes: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Each request's own rows of each output, in request order (padding rows at the end dropped)."""
        if len(sizes) == 1:
            n = sizes[0]
            return [{k: v.narrow(self.outputs[k], 0, n) if v.shape[self.outputs[k]] != n else v for k, v in outputs.items()}]
        result: list[dict[str, torch.Tensor]] = [{} for _ in sizes]
        for name, value in outputs.items():
            d = self.outputs[name]
            total = sum(sizes)
            if value.shape[d] < total:
                raise ServingError(f"output {name!r} has {value.shape[d]} rows for {total} batched rows")
            parts = torch.split(value.narrow(d, 0, total), list(sizes), dim=d)
            for r, part in zip(result, parts):
                r[name] = part
        return result


def _free_symbols(expr: str) -> set[str]:
    import sympy

    return {str(s) for s in sympy.sympify(expr).free_symbols}


PAD_POLICIES = ("none", "opt", "buckets")


def batch_buckets(low: int, high: int) -> list[int]:
    """Row counts a padded batch may have within [low, high]: the powers of two, and high itself.

    With CUDA graphs each distinct shape is captured (and its convolutions autotuned) once, on the
    request path; stacking requests of random arrival makes every row count from 1 to the maximum
    appear, so padding to these few sizes bounds the captures to log2(max) + 1 per other shape."""
    sizes = {high}
    b = 1
    while b < high:
        if b >= low:
            sizes.add(b)
        b *= 2
    return sorted(sizes)


WarmUpSizes = tuple[tuple[str, int, tuple[int, ...]], ...]  # (input, dim, sizes), as --warm-up-sizes gives them


def parse_warm_up_sizes(texts: Sequence[str]) -> WarmUpSizes:
    """['input_ids:1=32,64,128'] -> (('input_ids', 1, (32, 64, 128)),)."""
    out = []
    for text in texts:
        where, sep, sizes = str(text).partition("=")
        name, colon, dim = where.rpartition(":")
        values = [v.strip() for v in sizes.split(",") if v.strip()]
        if not sep or not colon or not name or not all(re.fullmatch(r"[0-9]+", v) for v in [dim, *values]) or not values:
            raise ServingError(f"--warm-up-sizes {text!r}: expected NAME:DIM=SIZE,SIZE,..., e.g. input_ids:1=32,64,128")
        out.append((name, int(dim), tuple(dict.fromkeys(int(v) for v in values))))
    return tuple(out)


def warm_up_symbols(signature: ModelSignature, sizes: WarmUpSizes) -> dict[str, tuple[int, ...]]:
    """--warm-up-sizes checked against the artifact, as the program's size symbol of each dim (tied
    dims of other inputs take the same sizes); every size must fit some profile."""
    by_name = {s.name: s for s in signature.inputs}
    symbols: dict[str, tuple[int, ...]] = {}
    for name, dim, values in sizes:
        if name not in by_name:
            raise ServingError(f"--warm-up-sizes {name}:{dim}: the model has no input {name!r}; its inputs are {signature.input_names}")
        dims = by_name[name].dims
        if dim >= len(dims):
            raise ServingError(f"--warm-up-sizes {name}:{dim}: input {name!r} has {len(dims)} dims")
        symbol = dims[dim]
        if not isinstance(symbol, str) or not symbol.isidentifier():
            raise ServingError(f"--warm-up-sizes {name}:{dim}: that dim is {symbol!r} in the artifact, not a dynamic dim of its own")
        outside = [v for v in values if not any(_fits_symbol(signature, p, symbol, v) for p in signature.profiles)]
        if outside:
            allowed = [(int(p[name].min[dim]), int(p[name].max[dim])) for p in signature.profiles]
            raise ServingError(f"--warm-up-sizes {name}:{dim}: {outside} fit no profile; the profiles allow {allowed}")
        symbols[symbol] = tuple(dict.fromkeys(symbols.get(symbol, ()) + values))
    return symbols


def _with_sizes(signature: ModelSignature, shapes: Shapes, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """`shapes` with every dim whose symbol is in `sizes` set to its size."""
    return {s.name: tuple(sizes.get(e, n) if isinstance(e, str) else n for e, n in zip(s.dims, shapes[s.name]))
            for s in signature.inputs}


def warm_up_shapes(signature: ModelSignature, plan: BatchPlan | None, padding: str,
                   sizes: Mapping[str, Sequence[int]] | None = None) -> list[list[dict[str, tuple[int, ...]]]]:
    """Per profile, the shapes a replica runs before serving: max, opt and min (an unbatched replica
    fed batch-1 requests runs the min), then opt with each combination of the `sizes` given for
    dynamic dims (by symbol, `warm_up_symbols`) that fits the profile, and with bucket padding each
    bucket's rows at each of those, largest first (each smaller CUDA graph reuses the memory the
    largest took); each twice (the second run captures the graph). Without `sizes`, requests whose
    other dims differ from opt's run each new shape first, and capture it, while being served."""
    per_profile = []
    for profile in signature.profiles:
        ends = [{s.name: tuple(getattr(profile[s.name], end)) for s in signature.inputs} for end in ("max", "opt", "min")]
        bases = [ends[1]]
        if sizes:
            fitting = [[(sym, v) for v in values if _fits_symbol(signature, profile, sym, v)] for sym, values in sizes.items()]
            bases += [_with_sizes(signature, ends[1], dict(combo)) for combo in itertools.product(*fitting)]
            ends += bases[1:]
        if plan is not None and padding == "buckets":
            name, dim = next(iter(plan.inputs.items()))
            rows = sorted(batch_buckets(int(profile[name].min[dim]), int(profile[name].max[dim])), reverse=True)
            ends += [plan.with_rows(base, b) for base in bases for b in rows]
        distinct = [dict(items) for items in dict.fromkeys(tuple(e.items()) for e in ends)]
        per_profile.append([shape for shape in distinct for _ in range(2)])
    return per_profile


def _fits_symbol(signature: ModelSignature, profile: Mapping[str, Any], symbol: str, value: int) -> bool:
    """Whether every dim carrying `symbol` allows `value` in this profile."""
    return all(int(profile[s.name].min[d]) <= value <= int(profile[s.name].max[d])
               for s in signature.inputs for d, e in enumerate(s.dims) if e == symbol)


def pad_target(signature: ModelSignature, profile: int, plan: BatchPlan, rows: int, policy: str) -> int:
    """The rows to pad a stacked batch of `rows` up to: the profile's opt batch ("opt", when larger),
    the next bucket ("buckets"), or `rows` itself ("none")."""
    name, dim = next(iter(plan.inputs.items()))
    spec = signature.profiles[profile][name]
    if policy == "opt":
        return max(rows, int(spec.opt[dim]))
    if policy == "buckets":
        return next((b for b in batch_buckets(int(spec.min[dim]), int(spec.max[dim])) if b >= rows), rows)
    return rows


@dataclasses.dataclass
class Call:
    """One model call of a batch: the requests it answers (indices), its stacked (and padded) inputs,
    the profile chosen for its shapes, the rows it runs (padding included), each request's rows
    (None: one request, not stacked)."""

    members: list[int]
    inputs: dict[str, torch.Tensor]
    profile: int
    rows: int
    sizes: list[int] | None


class Batch:
    """A batch of validated requests cut into model calls; each request gets its call's outputs (its
    own rows) or its call's exception. A failing call fails only its own requests.

    `prepare` groups, stacks and pads; the caller runs each of `calls` (in order on a model thread,
    or concurrently from a front end's event loop) and hands back `deliver` or `fail`."""

    def __init__(self, count: int, plan: BatchPlan | None, on_chunk: Callable[[int, int, int], None] | None) -> None:
        self.plan = plan
        self.on_chunk = on_chunk
        self.calls: list[Call] = []
        self._results: list[dict[str, torch.Tensor] | BaseException | None] = [None] * count

    @classmethod
    def prepare(
        cls,
        items: Sequence[T],
        shapes_of: Callable[[T], Shapes],
        tensors_of: Callable[[T], Mapping[str, torch.Tensor]],
        plan: BatchPlan | None,
        signature: ModelSignature,
        pad: str = "none",
        max_rows: int | None = None,
        on_chunk: Callable[[int, int, int], None] | None = None,
    ) -> Batch:
        """`on_chunk(requests, rows run including padding, profile)` is told of each call that succeeds."""
        batch = cls(len(items), plan, on_chunk)
        shapes = [shapes_of(it) for it in items]
        if plan is None:
            for i, it in enumerate(items):
                profile = signature.choose(shapes[i])
                batch.calls.append(Call([i], dict(tensors_of(it)), profile if profile is not None else 0, 1, None))
            return batch
        for chunk in plan.plan(shapes, lambda s: bool(signature.fitting(s)), max_rows):
            try:
                if not plan.stackable(shapes[chunk[0]]):
                    # declared dims of unequal sizes (a broadcast mask): it runs alone and as sent, neither
                    # padded (its 1-row mask would become zero rows) nor split (rows of which input?)
                    (i,) = chunk
                    batch.calls.append(Call(chunk, dict(tensors_of(items[i])), signature.profile_for(shapes[i]),
                                            plan.rows(shapes[i]), None))
                    continue
                inputs, sizes = plan.stack([tensors_of(items[i]) for i in chunk])
                rows = sum(sizes)
                stacked = plan.with_rows(shapes[chunk[0]], rows)
                profile = signature.profile_for(stacked)
                if pad != "none":
                    target = pad_target(signature, profile, plan, rows, pad)
                    if target > rows and signature.fits(profile, plan.with_rows(stacked, target)):
                        inputs = plan.pad(inputs, target)
                        rows = target  # what the model ran: the metrics count padding rows too
                batch.calls.append(Call(chunk, inputs, profile, rows, sizes))
            except Exception as e:  # noqa: BLE001 - handed to each request of the chunk, not swallowed
                batch._fail(chunk, e)
        return batch

    def run(self, execute: Callable[[dict[str, torch.Tensor], int], Mapping[str, torch.Tensor]]) -> None:
        """Each call in turn on this thread (`execute(inputs, profile)` runs the model)."""
        for call in self.calls:
            try:
                outputs = execute(call.inputs, call.profile)
            except Exception as e:  # noqa: BLE001 - handed to each request of the call
                self.fail(call, e)
            else:
                self.deliver(call, outputs)

    async def run_async(self, execute: Callable[[dict[str, torch.Tensor], int], Awaitable[Mapping[str, torch.Tensor]]]) -> None:
        """Every call at once, awaited (a front end sending its calls to the model tier)."""
        outputs = await asyncio.gather(*(execute(c.inputs, c.profile) for c in self.calls), return_exceptions=True)
        for call, out in zip(self.calls, outputs):
            if isinstance(out, BaseException):
                self.fail(call, out)
            else:
                self.deliver(call, out)

    def deliver(self, call: Call, outputs: Mapping[str, torch.Tensor]) -> None:
        """The call's outputs, split into each request's rows."""
        try:
            if call.sizes is None:
                self._results[call.members[0]] = dict(outputs)
            else:
                assert self.plan is not None
                for i, part in zip(call.members, self.plan.split(outputs, call.sizes)):
                    self._results[i] = part
        except Exception as e:  # noqa: BLE001 - a split that fails is the call's failure
            self.fail(call, e)
            return
        if self.on_chunk is not None:
            self.on_chunk(len(call.members), call.rows, call.profile)

    def fail(self, call: Call, error: BaseException) -> None:
        if isinstance(error, InputSpecError) and call.sizes is not None and (len(call.members) > 1 or call.rows != sum(call.sizes)):
            # each request was checked alone before it joined: the engine refusing the stacked or padded
            # call is the server's fault (a 500), not the requests' (a 400)
            wrapped = ServingError(f"the engine refused a batched call of {len(call.members)} request(s), {call.rows} rows: {error}")
            wrapped.__cause__ = error
            error = wrapped
        self._fail(call.members, error)

    def _fail(self, members: Sequence[int], error: BaseException) -> None:
        logger.warning("a batch of %d request(s) failed: %s", len(members), error)
        for i in members:
            self._results[i] = error

    def results(self) -> list[dict[str, torch.Tensor] | BaseException]:
        """One result per item, in order."""
        assert all(r is not None for r in self._results)
        return self._results  # type: ignore[return-value]


def run_chunks(
    items: Sequence[T],
    shapes_of: Callable[[T], Shapes],
    tensors_of: Callable[[T], Mapping[str, torch.Tensor]],
    plan: BatchPlan | None,
    signature: ModelSignature,
    execute: Callable[[dict[str, torch.Tensor], int], Mapping[str, torch.Tensor]],
    pad: str = "none",
    max_rows: int | None = None,
    on_chunk: Callable[[int, int, int], None] | None = None,
) -> list[dict[str, torch.Tensor] | BaseException]:
    """Run a batch of validated requests, its calls in turn on this thread (`execute(inputs, profile)`
    runs the model); one result (outputs or the exception) per item, in order."""
    batch = Batch.prepare(items, shapes_of, tensors_of, plan, signature, pad, max_rows, on_chunk)
    batch.run(execute)
    return batch.results()
