"""The v2 protocol and the batching rules, without Ray: every bad request is refused with its own
message, and stacked batches split back into exactly each request's rows."""

from __future__ import annotations

import asyncio
import json
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from flexrt.errors import InputSpecError, OutputEncodingError, RequestError, ServingError, ShapeOutOfRangeError
from flexrt.serving import batching, protocol, wire
from flexrt.serving.batching import BatchPlan, parse_batch_dims, run_chunks
from flexrt.serving.protocol import ModelSignature, Range, TensorInfo


def signature(profiles: list | None = None) -> ModelSignature:
    """Like a compiled `x (B, S, 16), mask (B, S) -> y (B, S, 8), n (B,)` with B in 1..8, S in 2..32."""
    inputs = [TensorInfo("x", torch.float32, ("s0", "s1", 16)), TensorInfo("mask", torch.float32, ("s0", "s1"))]
    outputs = [TensorInfo("y", torch.float32, ("s0", "s1", 8)), TensorInfo("n", torch.float32, ("s0",))]
    if profiles is None:
        profiles = [{"x": Range((1, 2, 16), (4, 8, 16), (8, 32, 16)), "mask": Range((1, 2), (4, 8), (8, 32))}]
    return ModelSignature("m", inputs, outputs, profiles)


def body(x: torch.Tensor, mask: torch.Tensor, **extra) -> dict:
    return {"inputs": [protocol.encode_tensor("x", x), protocol.encode_tensor("mask", mask)], **extra}


def model(x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Row-independent along dim 0, like the served model must be."""
    w = torch.arange(16 * 8, dtype=torch.float32).reshape(16, 8) / 100
    return {"y": (x @ w) * mask.unsqueeze(-1), "n": mask.sum(-1)}


# -- protocol ------------------------------------------------------------------------------------


def test_metadata_has_v2_fields_dynamic_dims_and_profiles() -> None:
    meta = signature().metadata()
    assert meta["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, -1, 16]},
        {"name": "mask", "datatype": "FP32", "shape": [-1, -1]},
    ]
    assert meta["outputs"][1] == {"name": "n", "datatype": "FP32", "shape": [-1]}
    assert meta["profiles"][0]["x"] == {"min": [1, 2, 16], "opt": [4, 8, 16], "max": [8, 32, 16]}
    json.dumps(meta)


def test_round_trip_flat_row_major() -> None:
    x = torch.randn(3, 5, 16)
    mask = torch.rand(3, 5)
    req = protocol.parse_infer_request(json.dumps(body(x, mask, id="r1")).encode(), signature())
    assert req.id == "r1" and req.profile == 0
    torch.testing.assert_close(req.inputs["x"], x)
    torch.testing.assert_close(req.inputs["mask"], mask)
    # nested data is accepted too (the protocol allows it)
    nested = body(x, mask)
    nested["inputs"][0]["data"] = x.tolist()
    torch.testing.assert_close(protocol.parse_infer_request(nested, signature()).inputs["x"], x)
    raw, header_length = protocol.encode_infer_response(signature(), model(x, mask), req)
    assert header_length is None  # nothing asked as binary: all JSON
    out = json.loads(raw)
    assert out["model_name"] == "m" and out["id"] == "r1"
    assert [o["name"] for o in out["outputs"]] == ["y", "n"]
    assert out["outputs"][0]["shape"] == [3, 5, 8] and len(out["outputs"][0]["data"]) == 3 * 5 * 8
    decoded = protocol.decode_response(out)
    np.testing.assert_array_equal(decoded["y"], model(x, mask)["y"].numpy())  # float32 values exactly
    assert decoded["y"].dtype == np.float32


@pytest.mark.parametrize(
    "mutate, error, text",
    [
        (lambda b: b.pop("inputs"), RequestError, "non-empty 'inputs'"),
        (lambda b: b["inputs"][0].update(datatype="FP16"), InputSpecError, "expected datatype FP32, got 'FP16'"),
        (lambda b: b["inputs"][0].update(datatype="FLOAT"), InputSpecError, "not a v2 datatype"),
        (lambda b: b["inputs"][0].update(datatype=["FP32"]), RequestError, "'datatype' must be a string such as 'FP32'"),
        (lambda b: b["inputs"][0]["data"].__setitem__(5, 1e39), RequestError, "values outside the range of FP32"),
        (lambda b: b["inputs"][0].update(name="z"), InputSpecError, "unknown input 'z'"),
        (lambda b: b["inputs"].pop(), InputSpecError, "missing input(s) ['mask']"),
        (lambda b: b["inputs"].append(dict(b["inputs"][0])), RequestError, "given twice"),
        (lambda b: b["inputs"][0].update(shape=[2, 4]), InputSpecError, "expected 3 dims"),
        (lambda b: b["inputs"][0].update(shape=[2, 4, 15]), InputSpecError, "takes only 16"),
        (lambda b: b["inputs"][0].update(shape=[2, 4, -16]), RequestError, "non-negative integers"),
        (lambda b: b["inputs"][0]["data"].pop(), RequestError, "holds 128 elements but 'data' has 127"),
        (lambda b: b["inputs"][0]["data"].__setitem__(3, "a"), RequestError, "takes numbers"),
        (lambda b: b["inputs"][0]["data"].__setitem__(3, True), RequestError, "FP32 takes numbers, got true/false"),
        (lambda b: b["inputs"][0].update(data=np.arange(128.0).reshape(2, 4, 16).tolist()) or
         b["inputs"][0]["data"][1][3].__setitem__(15, False), RequestError, "FP32 takes numbers, got true/false"),
        (lambda b: b["inputs"][0].pop("data"), RequestError, "has no 'data'"),
        (lambda b: b["inputs"][1].update(shape=[3, 4], data=[1.0] * 12), InputSpecError, "must equal input"),
        (lambda b: b.update(outputs=[{"name": "q"}]), InputSpecError, "unknown output(s) ['q']"),
        (lambda b: b.update(parameters={"binary_data_output": "yes"}), RequestError, "'binary_data_output' must be true or false"),
        (lambda b: b.update(parameters=[1]), RequestError, "the request: 'parameters' must be an object"),
        (lambda b: b.update(outputs=[{"name": "y", "parameters": {"binary_data": 1}}]), RequestError,
         "output 'y': parameter 'binary_data' must be true or false"),
    ],
)
def test_malformed_requests_are_refused(mutate, error, text) -> None:
    b = body(torch.randn(2, 4, 16), torch.ones(2, 4))
    mutate(b)
    with pytest.raises(error) as info:
        protocol.parse_infer_request(b, signature())
    assert text in str(info.value)


def test_json_nested_too_deep_is_a_request_error() -> None:
    with pytest.raises(RequestError, match="not valid JSON: RecursionError"):
        protocol.parse_infer_request(b"[" * 200_000, signature())


def test_a_model_returning_other_outputs_than_its_artifact_is_a_server_error() -> None:
    with pytest.raises(ServingError, match="returned 3 values; its artifact lists 2"):
        protocol.outputs_by_name((torch.zeros(1), torch.zeros(1), torch.zeros(1)), signature())


def test_binary_tensor_extension() -> None:
    sig = signature()
    x, mask = torch.randn(2, 5, 16), torch.rand(2, 5)
    body, n = protocol.encode_binary_request({"x": x, "mask": mask.numpy()}, request_id="b")
    req = protocol.parse_infer_request(body, sig, n)
    assert req.id == "b"
    torch.testing.assert_close(req.inputs["x"], x, rtol=0, atol=0)
    torch.testing.assert_close(req.inputs["mask"], mask, rtol=0, atol=0)
    # one input binary, one JSON
    head = json.loads(body[:n])
    head["inputs"][1] = protocol.encode_tensor("mask", mask)
    mixed = json.dumps(head).encode()
    req = protocol.parse_infer_request(mixed + body[n : n + x.numel() * 4], sig, len(mixed))
    torch.testing.assert_close(req.inputs["mask"], mask)
    with pytest.raises(RequestError, match="runs past the end"):
        protocol.parse_infer_request(body[:-4], sig, n)
    with pytest.raises(RequestError, match="bytes after the inputs"):
        protocol.parse_infer_request(body + b"\0", sig, n)
    with pytest.raises(RequestError, match="does not fit"):
        protocol.parse_infer_request(body, sig, len(body) + 1)
    with pytest.raises(RequestError, match="no Inference-Header-Content-Length"):
        protocol.parse_infer_request(body[:n], sig)
    wrong = json.loads(body[:n])
    wrong["inputs"][0]["parameters"]["binary_data_size"] -= 4
    wrong_head = json.dumps(wrong).encode()
    with pytest.raises(RequestError, match="takes 640 bytes, binary_data_size is 636"):
        protocol.parse_infer_request(wrong_head + body[n:-4], sig, len(wrong_head))


ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int8,
              torch.uint8, torch.bool]


def _values(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 100).to(dtype)
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=g).to(dtype)


@pytest.mark.parametrize("orjson", [True, False], ids=["orjson", "stdlib-json"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_outputs_round_trip_as_json_and_as_binary_data(dtype: torch.dtype, orjson: bool, monkeypatch) -> None:
    """Every datatype comes back exactly (BF16 as its float32 value), as JSON numbers (orjson or the
    standard library) and as raw bytes; the binary extension's per-output flag overrides the request's."""
    if not orjson:
        monkeypatch.setitem(sys.modules, "orjson", None)  # `import orjson` raises ImportError
    else:
        pytest.importorskip("orjson")
    sig = ModelSignature("m", [TensorInfo("x", torch.float32, ("s0", 16))],
                         [TensorInfo("a", dtype, ("s0", 3)), TensorInfo("b", dtype, ("s0",))],
                         [{"x": Range((1, 16), (2, 16), (4, 16))}])
    outputs = {"a": _values(dtype, (2, 3), 1), "b": _values(dtype, (2,), 2)}
    want = {n: (t.float() if dtype == torch.bfloat16 else t).numpy() for n, t in outputs.items()}
    x = torch.rand(2, 16)
    for params, outs, binary in [
        (None, None, set()),
        ({"binary_data_output": True}, None, {"a", "b"}),
        ({"binary_data_output": True}, [{"name": "b", "parameters": {"binary_data": False}}, {"name": "a"}], {"a"}),
        (None, [{"name": "a"}, {"name": "b", "parameters": {"binary_data": True}}], {"b"}),
    ]:
        req_body = {"inputs": [protocol.encode_tensor("x", x)], "id": "q"}
        if params is not None:
            req_body["parameters"] = params
        if outs is not None:
            req_body["outputs"] = outs
        req = protocol.parse_infer_request(json.dumps(req_body).encode(), sig)
        assert req.binary_outputs == binary
        raw, header_length = protocol.encode_infer_response(sig, outputs, req)
        assert (header_length is None) == (not binary)
        head = json.loads(raw[:header_length] if header_length else raw)
        assert head["id"] == "q" and [o["name"] for o in head["outputs"]] == [o["name"] for o in outs or [{"name": "a"}, {"name": "b"}]]
        assert {o["name"] for o in head["outputs"] if "binary_data_size" in o.get("parameters", {})} == binary
        got = protocol.decode_response(raw, header_length)
        for name, value in got.items():
            assert value.dtype == want[name].dtype and value.shape == want[name].shape, (name, value.dtype, value.shape)
            np.testing.assert_array_equal(value, want[name])


def test_a_scalar_output_as_binary_data() -> None:
    """A 0-dim output (a scalar score) goes back as raw bytes as well as JSON."""
    sig = ModelSignature("m", [TensorInfo("x", torch.float32, ("s0", 16))], [TensorInfo("s", torch.float32, ())],
                         [{"x": Range((1, 16), (2, 16), (4, 16))}])
    for flag in (False, True):
        request = {"inputs": [protocol.encode_tensor("x", torch.rand(2, 16))], "parameters": {"binary_data_output": flag}}
        req = protocol.parse_infer_request(request, sig)
        got = protocol.decode_response(*protocol.encode_infer_response(sig, {"s": torch.tensor(2.5)}, req))
        assert got["s"].shape == () and got["s"] == np.float32(2.5), (flag, got)


def test_non_finite_outputs_refused_as_json_and_carried_as_binary() -> None:
    sig = signature()
    x, mask = torch.rand(2, 3, 16), torch.ones(2, 3)
    outputs = model(x, mask)
    outputs["n"][1] = float("nan")
    outputs["y"][0, 0, 0] = float("inf")
    with pytest.raises(OutputEncodingError, match="output 'y' holds NaN or infinity"):
        protocol.encode_infer_response(sig, outputs, protocol.parse_infer_request(body(x, mask), sig))
    req = protocol.parse_infer_request(body(x, mask, parameters={"binary_data_output": True}), sig)
    got = protocol.decode_response(*protocol.encode_infer_response(sig, outputs, req))
    assert np.isinf(got["y"][0, 0, 0]) and np.isnan(got["n"][1])
    np.testing.assert_array_equal(got["y"][1], outputs["y"][1].numpy())


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(RequestError, match="not valid JSON"):
        protocol.parse_infer_request(b"{", signature())
    with pytest.raises(RequestError, match="JSON object"):
        protocol.parse_infer_request(b"[1]", signature())


def test_out_of_range_names_input_dim_and_ranges() -> None:
    b = body(torch.randn(9, 4, 16), torch.ones(9, 4))
    with pytest.raises(ShapeOutOfRangeError, match=r"no compiled profile fits these inputs: input 'x' dim 0 = 9 \(profile 0 allows \[1, 8\]"):
        protocol.parse_infer_request(b, signature())


def test_integer_and_bool_data_are_checked() -> None:
    sig = ModelSignature(
        "ids", [TensorInfo("ids", torch.int32, ("s0",)), TensorInfo("flag", torch.bool, ("s0",))],
        [TensorInfo("out", torch.int32, ("s0",))],
        [{"ids": Range((1,), (2,), (4,)), "flag": Range((1,), (2,), (4,))}],
    )

    def req(ids: list, flags: list, dt: str = "INT32") -> dict:
        return {"inputs": [{"name": "ids", "shape": [len(ids)], "datatype": dt, "data": ids},
                           {"name": "flag", "shape": [len(flags)], "datatype": "BOOL", "data": flags}]}

    r = protocol.parse_infer_request(req([1, 2], [True, False]), sig)
    assert r.inputs["ids"].dtype == torch.int32 and r.inputs["flag"].tolist() == [True, False]
    with pytest.raises(RequestError, match="takes integers"):
        protocol.parse_infer_request(req([1.5, 2], [True, False]), sig)
    with pytest.raises(RequestError, match="outside the range of INT32"):
        protocol.parse_infer_request(req([2**40, 2], [True, False]), sig)
    with pytest.raises(RequestError, match="true/false"):
        protocol.parse_infer_request(req([1, 2], [1, 0]), sig)
    for ids in ([1, True], [False, 2], [True, False]):  # numpy would read them as 1 and 0
        with pytest.raises(RequestError, match="input 'ids'.*INT32"):
            protocol.parse_infer_request(req(ids, [True, False]), sig)


def test_validate_tensors_handle_path() -> None:
    sig = signature()
    r = protocol.validate_tensors({"x": np.zeros((2, 3, 16), np.float32), "mask": torch.ones(2, 3)}, sig)
    assert r.shapes == {"x": (2, 3, 16), "mask": (2, 3)}
    with pytest.raises(InputSpecError, match="expected dtype torch.float32"):
        protocol.validate_tensors({"x": torch.zeros(2, 3, 16, dtype=torch.float64), "mask": torch.ones(2, 3)}, sig)


def test_protocol_and_batching_do_not_import_ray() -> None:
    code = (
        "import sys, flexrt, flexrt.serving, flexrt.serving.protocol, flexrt.serving.batching, flexrt.serving.client; "
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')); assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# -- batching ------------------------------------------------------------------------------------


def test_parse_batch_dims() -> None:
    assert parse_batch_dims(["x:0", "mask:0"]) == {"x": 0, "mask": 0}
    with pytest.raises(ServingError, match="NAME:DIM"):
        parse_batch_dims(["x"])
    with pytest.raises(ServingError, match="twice"):
        parse_batch_dims(["x:0", "x:1"])


def test_resolve_requires_every_input_and_splittable_outputs() -> None:
    sig = signature()
    plan = BatchPlan.resolve(sig, {"x": 0, "mask": 0})
    assert plan.symbol == "s0" and plan.outputs == {"y": 0, "n": 0}
    with pytest.raises(ServingError, match=r"declare it too \(--batch-dim mask:0\)"):
        BatchPlan.resolve(sig, {"x": 0})
    with pytest.raises(ServingError, match="static"):
        BatchPlan.resolve(sig, {"x": 2, "mask": 0})
    with pytest.raises(ServingError, match="also uses a batch dim at dim"):
        BatchPlan.resolve(sig, {"x": 1, "mask": 0})
    reduced = ModelSignature("r", sig.inputs, [TensorInfo("total", torch.float32, (8,))], sig.profiles)
    with pytest.raises(ServingError, match="exactly once"):
        BatchPlan.resolve(reduced, {"x": 0, "mask": 0})


def test_untied_batch_dims_stack_only_when_equal() -> None:
    """As exported from BERT: the mask's batch dim is its own symbol (the model broadcasts it)."""
    sig = ModelSignature(
        "bert", [TensorInfo("ids", torch.int64, ("s0", "s1")), TensorInfo("mask", torch.int64, ("s2", "s1"))],
        [TensorInfo("pooled", torch.float32, ("s0", 64))],
        [{"ids": Range((1, 16), (8, 128), (16, 256)), "mask": Range((1, 16), (8, 128), (16, 256))}],
    )
    plan = BatchPlan.resolve(sig, {"ids": 0, "mask": 0})
    assert plan.outputs == {"pooled": 0}
    shapes = [{"ids": (1, 32), "mask": (1, 32)}, {"ids": (3, 32), "mask": (1, 32)}, {"ids": (2, 32), "mask": (2, 32)}]
    assert plan.plan(shapes, lambda s: bool(sig.fitting(s))) == [[1], [0, 2]]  # the broadcast one runs alone
    with pytest.raises(ServingError, match=r"declare it too \(--batch-dim mask:0\)"):
        BatchPlan.resolve(ModelSignature("t", [sig.inputs[0], TensorInfo("mask", torch.int64, ("s0", "s1"))], sig.outputs,
                                         sig.profiles), {"ids": 0})


@pytest.mark.parametrize("order", [("ids", "mask"), ("mask", "ids")])
@pytest.mark.parametrize("pad", ["none", "opt", "buckets"])
def test_a_request_with_unequal_batch_dims_runs_as_sent(order: tuple[str, str], pad: str) -> None:
    """A broadcast mask (1 row for 3 ids) is neither padded with zero rows nor cut to one input's rows,
    whichever input is declared first; requests beside it are still stacked."""
    sig = ModelSignature(
        "bert", [TensorInfo("ids", torch.float32, ("s0", "s1")), TensorInfo("mask", torch.float32, ("s2", "s1"))],
        [TensorInfo("pooled", torch.float32, ("s0",))],
        [{"ids": Range((1, 4), (4, 8), (16, 8)), "mask": Range((1, 4), (4, 8), (16, 8))}],
    )
    plan = BatchPlan.resolve(sig, {name: 0 for name in order})

    def run(ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pooled": (ids * mask).sum(1)}

    reqs = [{"ids": torch.rand(3, 8) + 0.5, "mask": torch.rand(1, 8) + 0.5},
            {"ids": torch.rand(2, 8) + 0.5, "mask": torch.rand(2, 8) + 0.5},
            {"ids": torch.rand(1, 8) + 0.5, "mask": torch.rand(1, 8) + 0.5}]
    calls: list[tuple[int, int]] = []

    def execute(inputs: dict, profile: int) -> dict:
        calls.append((inputs["ids"].shape[0], inputs["mask"].shape[0]))
        return run(**inputs)

    results = run_chunks(reqs, lambda r: {n: t.shape for n, t in r.items()}, lambda r: r, plan, sig, execute, pad=pad)
    for req, result in zip(reqs, results):
        assert not isinstance(result, BaseException), result
        torch.testing.assert_close(result["pooled"], run(**req)["pooled"])
    assert calls[0] == (3, 1)  # as sent
    assert len(calls) == 2  # the two others stacked into one call


def test_plan_groups_by_other_dims_and_keeps_chunks_in_a_profile() -> None:
    sig = signature()
    plan = BatchPlan.resolve(sig, {"x": 0, "mask": 0})
    shapes = [
        {"x": (3, 4, 16), "mask": (3, 4)},  # 0
        {"x": (2, 5, 16), "mask": (2, 5)},  # 1: other S, own group
        {"x": (4, 4, 16), "mask": (4, 4)},  # 2: 3 + 4 = 7 <= 8
        {"x": (2, 4, 16), "mask": (2, 4)},  # 3: 7 + 2 = 9 > 8 -> new chunk
        {"x": (1, 5, 16), "mask": (1, 5)},  # 4: joins 1
    ]
    chunks = plan.plan(shapes, lambda s: bool(sig.fitting(s)))
    assert chunks == [[0, 2], [3], [1, 4]]
    assert plan.plan(shapes, lambda s: bool(sig.fitting(s)), max_rows=4) == [[0], [2], [3], [1, 4]]


def test_run_chunks_each_request_gets_its_own_rows() -> None:
    sig = signature()
    plan = BatchPlan.resolve(sig, {"x": 0, "mask": 0})
    gen = torch.Generator().manual_seed(0)
    reqs = []
    for _ in range(40):
        b, s = int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(2, 7, (1,), generator=gen))
        reqs.append({"x": torch.randn(b, s, 16, generator=gen), "mask": torch.rand(b, s, generator=gen) + 0.5})
    calls: list[tuple[int, int]] = []

    def execute(inputs: dict, profile: int) -> dict:
        calls.append((inputs["x"].shape[0], profile))
        assert sig.fits(profile, {n: t.shape for n, t in inputs.items()})
        return model(**inputs)

    results = run_chunks(reqs, lambda r: {n: t.shape for n, t in r.items()}, lambda r: r, plan, sig, execute)
    assert len(calls) < len(reqs)  # some were stacked
    assert max(b for b, _ in calls) <= 8
    for r, out in zip(reqs, results):
        assert not isinstance(out, BaseException)
        want = model(**r)
        torch.testing.assert_close(out["y"], want["y"])
        torch.testing.assert_close(out["n"], want["n"])


def _assert_own_rows_or_boom(requests: list[dict], results: list) -> None:
    """Each request's result equals the model on its own inputs; those 4 wide got the failing call's error."""
    for r, out in zip(requests, results, strict=True):
        if r["x"].shape[1] == 4:
            assert isinstance(out, RuntimeError)
            continue
        want = model(**r)
        torch.testing.assert_close(out["y"], want["y"])
        torch.testing.assert_close(out["n"], want["n"])


def test_a_batch_sent_at_once_gets_each_request_its_rows_and_keeps_failures_in_their_call() -> None:
    """A front end's path: every call of a batch awaited at once (`Batch.run_async`), finishing in any
    order; each request gets exactly its own rows, and a failed call fails only its own requests."""
    sig = signature()
    plan = BatchPlan.resolve(sig, {"x": 0, "mask": 0})
    gen = torch.Generator().manual_seed(5)
    reqs = [{"x": torch.randn(1 + i % 3, 2 + i % 5, 16, generator=gen), "mask": torch.rand(1 + i % 3, 2 + i % 5, generator=gen) + 0.5}
            for i in range(30)]
    chunks: list[tuple[int, int, int]] = []

    async def execute(inputs: dict, profile: int) -> dict:
        await asyncio.sleep(0.001 * (7 - inputs["x"].shape[1]))  # wider calls finish first
        if inputs["x"].shape[1] == 4:
            raise RuntimeError("boom")
        return model(**inputs)

    batch = batching.Batch.prepare(reqs, lambda r: {n: t.shape for n, t in r.items()}, lambda r: r, plan, sig,
                                   pad="buckets", on_chunk=lambda *c: chunks.append(c))
    assert len(batch.calls) < len(reqs)
    asyncio.run(batch.run_async(execute))
    _assert_own_rows_or_boom(reqs, batch.results())
    assert sum(c[0] for c in chunks) == sum(r["x"].shape[1] != 4 for r in reqs)  # succeeded calls only


class _Host:
    """What MergingQueue uses of a ModelHost: one model thread running `execute`, slowly."""

    def __init__(self, plan: BatchPlan | None, padding: str = "none") -> None:
        import concurrent.futures
        import types

        self.signature = signature()
        self.plan = plan
        self.config = types.SimpleNamespace(padding=padding)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.ran: list[tuple[int, ...]] = []

    def execute(self, inputs: dict, profile: int) -> dict:
        import time

        assert self.signature.fits(profile, {n: t.shape for n, t in inputs.items()})
        self.ran.append(tuple(inputs["x"].shape))
        time.sleep(0.01)  # a GPU call: the next calls queue meanwhile
        if inputs["x"].shape[1] == 4:
            raise RuntimeError("boom")
        return model(**inputs)

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


@pytest.mark.parametrize("batched", [True, False])
def test_the_model_tier_merges_calls_that_wait_and_answers_each_with_its_rows(batched: bool) -> None:
    """Calls that arrive while the model thread is busy run as one (stacked by shape, cut to fit a
    profile, padded by the policy); each call gets back exactly its own rows, a failed merged call
    fails only the calls in it. Without batch dims every call runs alone, as sent."""
    from flexrt.serving.merge import MergingQueue

    host = _Host(BatchPlan.resolve(signature(), {"x": 0, "mask": 0}) if batched else None, "buckets")
    queue = MergingQueue(host)
    gen = torch.Generator().manual_seed(11)
    calls = [{"x": torch.randn(1 + i % 3, 2 + i % 3 * 2, 16, generator=gen),
              "mask": torch.rand(1 + i % 3, 2 + i % 3 * 2, generator=gen) + 0.5} for i in range(24)]

    async def main() -> list:
        return await asyncio.gather(*(queue.submit(c) for c in calls), return_exceptions=True)

    results = asyncio.run(main())
    _assert_own_rows_or_boom(calls, results)
    assert queue.received == len(calls)
    if batched:
        assert len(host.ran) < len(calls) and max(r[0] for r in host.ran) <= 8, host.ran
        assert {r[0] for r in host.ran} <= {1, 2, 4, 8}, host.ran  # bucket padding at the model tier
    else:
        assert sorted(host.ran) == sorted(tuple(c["x"].shape) for c in calls)


def test_a_stopped_model_tier_answers_every_call_it_held() -> None:
    """Its drain task cancelled (the replica stopping) while calls run and wait: each caller gets an
    error, none waits forever."""
    from flexrt.serving.merge import MergingQueue

    queue = MergingQueue(_Host(None))
    calls = [{"x": torch.randn(1, 2, 16), "mask": torch.ones(1, 2)} for _ in range(3)]

    async def main() -> list:
        tasks = [asyncio.ensure_future(queue.submit(c)) for c in calls]
        await asyncio.sleep(0.002)  # the first call runs on the model thread (10 ms), the others wait
        assert queue._drain is not None
        queue._drain.cancel()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "stopped before" in str(r) for r in results), results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool])
def test_model_tier_calls_carry_tensors_as_arrays_of_every_dtype(dtype: torch.dtype) -> None:
    """Inputs and outputs between a front end and the model tier travel as numpy arrays (cheap to pickle);
    dtypes numpy lacks keep their dtype, every value its bits, a non-contiguous tensor its values."""
    base = torch.randn(4, 6, 5) * 100
    tensors = {"a": base.to(dtype), "b": base.to(dtype)[:, ::2].transpose(0, 1)}
    back = wire.unpack(pickle.loads(pickle.dumps(wire.pack(tensors), protocol=pickle.HIGHEST_PROTOCOL)))
    for name, t in tensors.items():
        assert back[name].dtype == dtype and back[name].shape == t.shape
        assert torch.equal(back[name], t)
    assert all(isinstance(v, (np.ndarray, tuple)) for v in wire.pack(tensors).values())


def test_padding_and_failures_stay_with_their_chunk() -> None:
    sig = signature()
    plan = BatchPlan.resolve(sig, {"x": 0, "mask": 0})
    reqs = [{"x": torch.randn(1, 3, 16), "mask": torch.ones(1, 3)}, {"x": torch.randn(2, 3, 16), "mask": torch.ones(2, 3)},
            {"x": torch.randn(1, 6, 16), "mask": torch.ones(1, 6)}]
    seen: list[int] = []

    def execute(inputs: dict, profile: int) -> dict:
        seen.append(inputs["x"].shape[0])
        if inputs["x"].shape[1] == 6:
            raise RuntimeError("boom")
        return model(**inputs)

    results = run_chunks(reqs, lambda r: {n: t.shape for n, t in r.items()}, lambda r: r, plan, sig, execute, pad="opt")
    assert seen == [4, 4]  # 1 + 2 = 3 rows padded to opt 4; the 6-wide request alone, padded to 4 too
    torch.testing.assert_close(results[0]["y"], model(**reqs[0])["y"])
    torch.testing.assert_close(results[1]["n"], model(**reqs[1])["n"])
    assert isinstance(results[2], RuntimeError)


def test_the_engine_refusing_a_batched_call_is_a_server_error() -> None:
    """Each request was checked alone before it joined: an engine refusing the stacked call is the
    server's fault (500), while a lone request's own refusal stays its InputSpecError (400)."""
    sig = signature()
    plan = BatchPlan.resolve(sig, {"x": 0, "mask": 0})
    reqs = [{"x": torch.randn(1, 3, 16), "mask": torch.ones(1, 3)}, {"x": torch.randn(2, 3, 16), "mask": torch.ones(2, 3)},
            {"x": torch.randn(1, 6, 16), "mask": torch.ones(1, 6)}]

    def execute(inputs: dict, profile: int) -> dict:
        raise InputSpecError("engine: no")

    results = run_chunks(reqs, lambda r: {n: t.shape for n, t in r.items()}, lambda r: r, plan, sig, execute)
    assert all(isinstance(r, ServingError) and "batched call of 2 request(s)" in str(r) for r in results[:2]), results
    assert isinstance(results[2], InputSpecError) and not isinstance(results[2], ServingError)
    padded = run_chunks(reqs[2:], lambda r: {n: t.shape for n, t in r.items()}, lambda r: r, plan, sig, execute, pad="opt")
    assert isinstance(padded[0], ServingError) and "4 rows" in str(padded[0])  # padded 1 -> 4 by the server


def test_no_plan_runs_each_request_alone() -> None:
    sig = signature()
    reqs = [{"x": torch.randn(2, 3, 16), "mask": torch.ones(2, 3)} for _ in range(3)]
    n = []
    results = run_chunks(reqs, lambda r: {k: t.shape for k, t in r.items()}, lambda r: r, None, sig,
                         lambda inputs, p: n.append(1) or model(**inputs))
    assert len(n) == 3
    torch.testing.assert_close(results[2]["y"], model(**reqs[2])["y"])
    assert batching.pad_target(sig, 0, BatchPlan.resolve(sig, {"x": 0, "mask": 0}), 1, "opt") == 4


def test_bucket_padding_bounds_the_shapes_a_replica_runs() -> None:
    """Random arrivals stack into every row count; bucket padding runs only powers of two (and the
    profile's max), each request still answered with exactly its own rows."""
    assert batching.batch_buckets(1, 32) == [1, 2, 4, 8, 16, 32]
    assert batching.batch_buckets(1, 12) == [1, 2, 4, 8, 12]
    assert batching.batch_buckets(3, 8) == [4, 8]
    sig = signature()
    plan = BatchPlan.resolve(sig, {"x": 0, "mask": 0})
    rng = random.Random(3)
    seen: set[int] = set()

    def execute(inputs: dict, profile: int) -> dict:
        seen.add(inputs["x"].shape[0])
        return model(**inputs)

    for _ in range(20):
        reqs = [{"x": torch.randn(1, 3, 16), "mask": torch.ones(1, 3)} for _ in range(rng.randint(1, 8))]
        results = run_chunks(reqs, lambda r: {n: t.shape for n, t in r.items()}, lambda r: r, plan, sig, execute,
                             pad="buckets")
        for r, got in zip(reqs, results):
            torch.testing.assert_close(got["y"], model(**r)["y"])
    assert seen <= set(batching.batch_buckets(1, 8)) and len(seen) > 1, seen


def test_warm_up_runs_max_opt_min_then_buckets_largest_first_each_twice() -> None:
    """An unbatched replica fed batch-1 requests runs the profile's min: start-up must have run (on
    CUDA, captured) it, not the first requests. Largest first, each shape twice, none repeated."""
    sig = signature()
    ends = [{"x": (8, 32, 16), "mask": (8, 32)}, {"x": (4, 8, 16), "mask": (4, 8)}, {"x": (1, 2, 16), "mask": (1, 2)}]
    assert batching.warm_up_shapes(sig, None, "buckets") == [[s for s in ends for _ in range(2)]]
    plan = BatchPlan.resolve(sig, {"x": 0, "mask": 0})
    assert batching.warm_up_shapes(sig, plan, "none") == [[s for s in ends for _ in range(2)]]
    buckets = [{"x": (b, 8, 16), "mask": (b, 8)} for b in (8, 2, 1)]  # 4 rows at opt is opt itself
    assert batching.warm_up_shapes(sig, plan, "buckets") == [[s for s in ends + buckets for _ in range(2)]]
    two = signature([sig.profiles[0], {"x": Range((1, 33, 16), (2, 40, 16), (2, 64, 16)), "mask": Range((1, 33), (2, 40), (2, 64))}])
    assert [len(p) for p in batching.warm_up_shapes(two, None, "none")] == [6, 6]


def test_warm_up_sizes_cover_every_bucket_at_each_size_of_a_dim() -> None:
    """`--warm-up-sizes x:1=...`: each size of the sequence dim (tied: mask's dim 1 too) at every
    bucket, in the profile that allows it, so that no request's shape is first run while serving."""
    two = signature([{"x": Range((1, 2, 16), (4, 8, 16), (8, 32, 16)), "mask": Range((1, 2), (4, 8), (8, 32))},
                     {"x": Range((1, 33, 16), (2, 40, 16), (2, 64, 16)), "mask": Range((1, 33), (2, 40), (2, 64))}])
    sizes = batching.warm_up_symbols(two, batching.parse_warm_up_sizes(["x:1=16,48,8"]))
    assert sizes == {"s1": (16, 48, 8)}
    plan = BatchPlan.resolve(two, {"x": 0, "mask": 0})
    first, second = batching.warm_up_shapes(two, plan, "buckets", sizes)
    for shapes, lengths, buckets in ((first, (16, 8), (8, 4, 2, 1)), (second, (48,), (2, 1))):
        for n in lengths:
            for b in buckets:
                assert {"x": (b, n, 16), "mask": (b, n)} in shapes, (n, b)
        assert all(s["x"][1] == s["mask"][1] for s in shapes)  # tied dims move together
        assert all(shapes.count(s) == 2 for s in shapes)  # each twice: run, then captured
    assert not any(s["x"][1] == 48 for s in first) and not any(s["x"][1] in (8, 16) for s in second)
    assert first[:2] == [{"x": (8, 32, 16), "mask": (8, 32)}] * 2  # the largest shape still first


@pytest.mark.parametrize("texts,message", [
    (["x:1"], "expected NAME:DIM=SIZE"), (["x=1,2"], "expected NAME:DIM=SIZE"), (["x:1=a"], "expected NAME:DIM=SIZE"),
    (["y:1=4"], "no input 'y'"), (["x:5=4"], "has 3 dims"), (["x:2=16"], "not a dynamic dim"),
    (["x:1=4,99"], r"\[99\] fit no profile"),
])
def test_warm_up_sizes_are_checked_against_the_artifact(texts, message) -> None:
    with pytest.raises(ServingError, match=message):
        batching.warm_up_symbols(signature(), batching.parse_warm_up_sizes(texts))


def test_a_replica_whose_device_keeps_failing_reports_itself_unhealthy() -> None:
    """Ray Serve replaces a replica whose check_health raises: after UNHEALTHY_AFTER model calls in a row
    fail on the device (a sticky CUDA error), not after a request's own error, and a success resets it."""
    from flexrt.serving import host as host_module

    errors: list[BaseException | None] = []

    def module(x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        error = errors.pop(0)
        if error is not None:
            raise error
        return model(x, mask)

    host = object.__new__(host_module.ModelHost)
    host.signature, host.module, host.device = signature(), module, torch.device("cpu")
    host.threads, host.calls, host.model_ms, host.device_failures, host.last_device_error = set(), 0, 0.0, 0, ""
    inputs = {"x": torch.randn(2, 3, 16), "mask": torch.ones(2, 3)}
    sticky = RuntimeError("CUDA error: an illegal memory access was encountered")
    errors += [sticky, sticky, None, ValueError("a request's own"), sticky, sticky, sticky]
    for _ in range(2):
        with pytest.raises(RuntimeError):
            host.execute(inputs, 0)
    host.check_health()  # two in a row: not yet
    torch.testing.assert_close(host.execute(inputs, 0)["y"], model(**inputs)["y"])  # a success resets the count
    with pytest.raises(ValueError):
        host.execute(inputs, 0)
    assert host.device_failures == 0  # not the device's failure
    for _ in range(host_module.UNHEALTHY_AFTER):
        with pytest.raises(RuntimeError):
            host.execute(inputs, 0)
    with pytest.raises(ServingError, match="model calls failed on cpu: RuntimeError: CUDA error: an illegal memory"):
        host.check_health()
