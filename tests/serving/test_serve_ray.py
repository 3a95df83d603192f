"""End to end on a real local Ray Serve (127.0.0.1 only): a model compiled here on CPU, ~200
concurrent requests of random in-range shapes each answered with exactly its own rows, 400s for bad
requests, 503s past the queue bound and then recovery, and no Ray process left after shutdown."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator

import pytest
import torch

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

import flexrt  # noqa: E402
from flexrt.errors import ArtifactError, ServingError  # noqa: E402
from flexrt.serving import cli, ray_env  # noqa: E402
from flexrt.serving.application import build_app  # noqa: E402
from flexrt.serving.client import InferenceClient  # noqa: E402
from flexrt.serving.config import ServeConfig  # noqa: E402
from flexrt.serving.protocol import encode_request  # noqa: E402

pytestmark = pytest.mark.serve

MAX_B, MAX_S = 8, 12
DEADLINE_S = 150  # the whole test; every loop below is bounded in count and by this


class Tiny(torch.nn.Module):
    """Rows along dim 0 are independent; the second dim is dynamic too."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(16, 32)
        self.b = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.b(torch.nn.functional.gelu(self.a(x)))
        return {"y": h, "pooled": h.mean(dim=1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_serve(port: int, metrics_port: int | None = None) -> Iterator[str]:
    """A local Ray with Serve's HTTP proxy on 127.0.0.1:port (and Ray's Prometheus endpoint on
    `metrics_port`, if given); shut down (Ray included) on exit."""
    extra = {"_metrics_export_port": metrics_port} if metrics_port is not None else {}
    ray_env.apply()  # as flexrt serve starts its Ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, **extra)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _ray_pids() -> set[int]:
    """raylet / gcs_server / ray worker processes on this machine, from /proc."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if b"raylet" in cmd or b"gcs_server" in cmd or b"ray::" in cmd or b"default_worker.py" in cmd:
            pids.add(int(entry))
    return pids


def _post(url: str, body: bytes, timeout: float = 60.0) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"error": raw.decode(errors="replace")}
        return e.code, payload, dict(e.headers)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    model = Tiny().eval()
    inputs = [flexrt.Input(min_shape=(1, 2, 16), opt_shape=(4, 6, 16), max_shape=(MAX_B, MAX_S, 16), name="x")]
    compiled = flexrt.compile(model, ir="dynamo", arg_inputs=inputs, device="cpu")
    path = str(tmp_path_factory.mktemp("serve") / "tiny.ep")
    flexrt.save(compiled, path, arg_inputs=inputs)
    return path, model


def test_serve_end_to_end(artifact: tuple[str, torch.nn.Module]) -> None:
    path, model = artifact
    start = time.monotonic()
    before = _ray_pids()
    port = _free_port()
    with local_serve(port) as url:
        config = ServeConfig.from_mapping({
            "artifact": path, "name": "tiny", "batch_dims": "x:0", "max_batch_size": 8, "batch_wait_ms": 20,
            "max_queue": 16, "max_ongoing": 8, "num_cpus": 0.5, "graceful_shutdown_timeout_s": 10,
        })
        serve.run(build_app(config), name="tiny", route_prefix="/", blocking=False)
        client = InferenceClient(url, "tiny")
        assert client.live() and client.ready()
        meta = client.metadata()
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 16]}]
        assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"y": [-1, -1, 8], "pooled": [-1, 8]}
        assert meta["profiles"][0]["x"]["max"] == [MAX_B, MAX_S, 16]

        # -- ~200 concurrent requests of random shapes, each checked against eager ---------------
        n_threads, per_thread = 8, 25
        failures: list[str] = []
        done = [0]
        lock = threading.Lock()

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            gen = torch.Generator().manual_seed(seed)
            for i in range(per_thread):
                if time.monotonic() - start > DEADLINE_S:
                    failures.append(f"thread {seed}: deadline")
                    return
                b, s = rng.randint(1, 3), rng.choice([3, 5, 7])  # few S values: batches form
                x = torch.rand(b, s, 16, generator=gen) + 0.1
                try:
                    out = client.infer({"x": x}, request_id=f"{seed}-{i}", binary=i % 2 == 1)  # JSON and binary
                    with torch.no_grad():
                        want = model(x)
                    torch.testing.assert_close(torch.from_numpy(out["y"]), want["y"], rtol=1e-4, atol=1e-5)
                    torch.testing.assert_close(torch.from_numpy(out["pooled"]), want["pooled"], rtol=1e-4, atol=1e-5)
                    with lock:
                        done[0] += 1
                except Exception as e:  # noqa: BLE001 - collected and asserted below
                    failures.append(f"{seed}-{i} {tuple(x.shape)}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, DEADLINE_S - (time.monotonic() - start)))
        assert not any(t.is_alive() for t in threads), "client threads did not finish"
        assert not failures, failures[:5]
        assert done[0] == n_threads * per_thread
        stats = json.loads(urllib.request.urlopen(f"{url}/v2/models/tiny/stats", timeout=30).read())["replica"]
        assert stats["requests"] == n_threads * per_thread
        assert stats["calls"] < stats["requests"], stats  # requests were stacked
        assert max(int(k) for k in stats["batch_requests"]) > 1
        assert stats["model_threads"] == 1  # warm-up and every batch on the replica's one model thread

        # -- bad requests: 400 with flexrt's message ---------------------------------------------
        infer = f"{url}/v2/models/tiny/infer"
        good = encode_request({"x": torch.rand(2, 3, 16)})
        cases = {
            "not JSON": (b"{nope", "not valid JSON"),
            "wrong dtype": (json.dumps({"inputs": [{**good["inputs"][0], "datatype": "INT64"}]}).encode(), "expected datatype FP32"),
            "wrong rank": (json.dumps({"inputs": [{**good["inputs"][0], "shape": [6, 16]}]}).encode(), "expected 3 dims"),
            "unknown input": (json.dumps({"inputs": [{**good["inputs"][0], "name": "q"}]}).encode(), "unknown input 'q'"),
            "out of range": (json.dumps(encode_request({"x": torch.rand(MAX_B + 1, 3, 16)})).encode(), "no compiled profile fits these inputs"),
            "long seq": (json.dumps(encode_request({"x": torch.rand(1, MAX_S + 1, 16)})).encode(), "dim 1 = 13"),
        }
        for what, (body, text) in cases.items():
            status, payload, _ = _post(infer, body)
            assert status == 400, (what, status, payload)
            assert text in payload["error"], (what, payload)
        assert _post(f"{url}/v2/models/nope/infer", json.dumps(good).encode())[0] == 404
        # outputs JSON cannot carry (3e38 overflows the first layer): flexrt's own 500, not a bare one
        status, payload, _ = _post(infer, json.dumps(encode_request({"x": torch.full((1, 3, 16), 3e38)})).encode())
        assert status == 500 and "NaN or infinity" in payload["error"], (status, payload)
        # ... while raw bytes carry them as they are (the binary tensor extension, listed in /v2)
        assert "binary_tensor_data" in client._get("/v2")["extensions"]
        out = client.infer({"x": torch.full((1, 3, 16), 3e38)}, binary=True)
        assert not torch.from_numpy(out["pooled"]).isfinite().all(), out["pooled"]

        # -- the DeploymentHandle path -------------------------------------------------------------
        handle = serve.get_app_handle("tiny")
        x = torch.rand(3, 4, 16) + 0.1
        out = handle.predict.remote({"x": x}).result(timeout_s=60)
        with torch.no_grad():
            torch.testing.assert_close(out["pooled"], model(x)["pooled"], rtol=1e-4, atol=1e-5)
        with pytest.raises(Exception, match="expected dtype torch.float32"):
            handle.predict.remote({"x": x.double()}).result(timeout_s=60)

        # -- a flood past the queue bound: 503 + Retry-After, nothing lost, then recovery --------
        flood = 96
        big = json.dumps(encode_request({"x": torch.rand(MAX_B, MAX_S, 16)})).encode()
        results: list[tuple[int, dict, dict]] = []
        gate = threading.Barrier(flood, timeout=60)

        def flooder() -> None:
            try:
                gate.wait()
            except threading.BrokenBarrierError:
                pass
            results.append(_post(infer, big, timeout=90))

        threads = [threading.Thread(target=flooder) for _ in range(flood)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, DEADLINE_S + 30 - (time.monotonic() - start)))
        assert len(results) == flood  # every request answered once
        codes = [r[0] for r in results]
        assert set(codes) <= {200, 503}, codes
        assert codes.count(503) > 0, "no request was refused past the queue bound"
        assert codes.count(200) > 0
        refused = next(r for r in results if r[0] == 503)
        assert {k.lower(): v for k, v in refused[2].items()}.get("retry-after") == "1"
        for status, payload, _ in results:
            if status == 200:
                assert payload["outputs"][0]["shape"] == [MAX_B, MAX_S, 8]
        print(f"SUMMARY stats={stats} flood: 200={codes.count(200)} 503={codes.count(503)} t={time.monotonic() - start:.1f}s")
        for _ in range(5):  # recovered: sequential requests all succeed
            out = client.infer({"x": torch.rand(1, 3, 16)})
            assert out["y"].shape == (1, 3, 8)

        # -- drain: delete the app (what `flexrt serve` does on SIGTERM) with requests in flight ----
        inflight: list[tuple[int, dict, dict] | str] = []
        body = json.dumps(encode_request({"x": torch.rand(MAX_B, MAX_S, 16)})).encode()

        def sender() -> None:
            try:
                inflight.append(_post(infer, body, timeout=60))
            except OSError as e:  # a dropped connection: what draining must not cause
                inflight.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=sender) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        serve.delete("tiny")
        for t in threads:
            t.join(timeout=60)
        assert len(inflight) == len(threads)
        assert all(not isinstance(r, str) for r in inflight), inflight
        drained = [r[0] for r in inflight]  # type: ignore[index]
        assert set(drained) <= {200, 404, 503}, drained  # answered, or refused before being taken in
        assert drained.count(200) > 0, drained
        print(f"SUMMARY drain: {sorted(drained)}")
    # -- nothing of Ray left behind ----------------------------------------------------------------
    for _ in range(60):
        left = _ray_pids() - before
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"Ray processes left after shutdown: {sorted(left)}"
    with pytest.raises(OSError):  # the HTTP proxy is gone too
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)


def _check_concurrently(client: InferenceClient, model: torch.nn.Module, start: float, per_thread: int,
                        make: Callable[[int, int, torch.Generator], torch.Tensor]) -> None:
    """8 client threads, `per_thread` requests each (`make(seed, i, gen)` + 0.1), every answer equal to
    eager; bounded by DEADLINE_S from `start`."""
    failures: list[str] = []

    def worker(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for i in range(per_thread):
            if time.monotonic() - start > DEADLINE_S:
                failures.append("deadline")
                return
            x = make(seed, i, gen) + 0.1
            try:
                out = client.infer({"x": x})
                with torch.no_grad():
                    torch.testing.assert_close(torch.from_numpy(out["y"]), model(x)["y"], rtol=1e-4, atol=1e-5)
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                failures.append(f"{seed}-{i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, DEADLINE_S - (time.monotonic() - start)))
    assert not any(t.is_alive() for t in threads) and not failures, failures[:5]


def test_two_replicas_both_serve_with_bucket_padding(artifact: tuple[str, torch.nn.Module]) -> None:
    """`--replicas 2`: both replicas load the one artifact (no compile), both answer, each reports who it
    is; with bucket padding every model call runs a power-of-two batch and answers stay exact."""
    path, model = artifact
    start = time.monotonic()
    with local_serve(_free_port()) as url:
        config = ServeConfig.from_mapping({
            "artifact": path, "name": "tiny", "batch_dims": "x:0", "max_batch_size": 8, "batch_wait_ms": 20,
            "replicas": 2, "num_cpus": 0.5, "pad": "buckets", "graceful_shutdown_timeout_s": 5,
            "warm_up_sizes": f"x:1=3,{MAX_S}",  # each bucket at these sequence lengths, before serving
        })
        serve.run(build_app(config), name="tiny", route_prefix="/", blocking=False)
        _check_concurrently(InferenceClient(url, "tiny"), model, start, 12,
                            lambda seed, i, gen: torch.rand(1 + i % 2, 5, 16, generator=gen))
        replicas: dict[str, dict] = {}

        def ask(_: int) -> dict:
            return json.loads(urllib.request.urlopen(f"{url}/v2/models/tiny/stats", timeout=30).read())["replica"]

        # Ray routes each GET to one replica, and one at a time all may go to the same idle one (a CI run
        # saw 60 in a row): ask 8 at once, so both are busy, until both answered (bounded: 20 rounds)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(20):
                for stats in pool.map(ask, range(8)):
                    replicas[stats["replica_id"]] = stats
                if len(replicas) == 2 or time.monotonic() - start > DEADLINE_S:
                    break
        assert len(replicas) == 2, replicas
        assert len({r["pid"] for r in replicas.values()}) == 2
        assert sum(r["requests"] for r in replicas.values()) == 8 * 12
        assert all(r["requests"] > 0 and r["startup_s"] > 0 for r in replicas.values()), replicas
        assert all(r["rows"] >= r["requests"] for r in replicas.values())
        ran = {int(k) for r in replicas.values() for k in r["batch_rows"]}
        assert ran <= {1, 2, 4, 8}, ran  # padded to buckets: requests of 1 and 2 rows stack into any count


def test_without_batching_requests_run_alone_on_one_model_thread(artifact: tuple[str, torch.nn.Module]) -> None:
    """No --batch-dim: each request is its own model call, all of them on the replica's one model
    thread in arrival order (not a thread each from asyncio's pool, queueing for the model's lock)."""
    path, model = artifact
    start = time.monotonic()
    with local_serve(_free_port()) as url:
        config = ServeConfig.from_mapping({"artifact": path, "name": "tiny", "num_cpus": 0.5, "graceful_shutdown_timeout_s": 5})
        serve.run(build_app(config), name="tiny", route_prefix="/", blocking=False)
        _check_concurrently(InferenceClient(url, "tiny"), model, start, 10,
                            lambda seed, i, gen: torch.rand(1 + (seed + i) % MAX_B, 2 + i % (MAX_S - 1), 16, generator=gen))
        stats = json.loads(urllib.request.urlopen(f"{url}/v2/models/tiny/stats", timeout=30).read())["replica"]
    assert stats["requests"] == stats["calls"] == 80
    assert stats["model_threads"] == 1


def test_front_ends_batch_and_the_model_tier_runs_one_call_per_chunk(artifact: tuple[str, torch.nn.Module]) -> None:
    """`--frontends 2`: two CPU replicas answer HTTP and batch, the one model replica runs what they send
    (one call per stacked chunk); answers equal eager; bad requests are refused by the front end."""
    path, model = artifact
    start = time.monotonic()
    with local_serve(_free_port()) as url:
        config = ServeConfig.from_mapping({
            "artifact": path, "name": "tiny", "batch_dims": "x:0", "max_batch_size": 8, "batch_wait_ms": 20,
            "frontends": 2, "num_cpus": 0.5, "graceful_shutdown_timeout_s": 5,
        })
        serve.run(build_app(config), name="tiny", route_prefix="/", blocking=False)
        client = InferenceClient(url, "tiny")
        assert client.metadata()["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 16]}]
        _check_concurrently(client, model, start, 12, lambda seed, i, gen: torch.rand(1 + i % 3, 5, 16, generator=gen))
        status, payload, _ = _post(f"{url}/v2/models/tiny/infer", json.dumps(encode_request({"x": torch.rand(1, 99, 16)})).encode())
        assert status == 400 and "dim 1" in payload["error"], payload
        fronts: dict[str, dict] = {}
        for _ in range(40):  # Ray routes each GET to one front end: ask until both answered (bounded)
            stats = json.loads(urllib.request.urlopen(f"{url}/v2/models/tiny/stats", timeout=30).read())["replica"]
            fronts[stats["replica_id"]] = stats
            if len(fronts) == 2:
                break
    assert len(fronts) == 2, fronts
    assert all(f["role"] == "frontend" and "gpu" not in f for f in fronts.values()), fronts
    requests = sum(f["requests"] for f in fronts.values())
    calls = sum(f["calls"] for f in fronts.values())
    assert requests == 8 * 12 and calls < requests, (requests, calls)  # stacked in the front ends
    model_tier = max((f["model_tier"] for f in fronts.values()), key=lambda m: m["model_calls"])
    assert model_tier["calls_received"] == calls  # every chunk one call there
    assert 0 < model_tier["model_calls"] <= calls  # those waiting for the model thread merged; the warm-up not counted
    assert model_tier["model_threads"] == 1


def test_front_ends_send_calls_larger_than_grpcs_default_message(tmp_path) -> None:
    """One request of 5 MB through a front end: the model tier's gRPC server takes it (Ray's default
    limit, 4 MiB, refused ResNet-50 batches of 16 with a 500 on the H200)."""
    torch.manual_seed(1)
    model = torch.nn.Linear(16, 4).eval()
    inputs = [flexrt.Input(min_shape=(1, 2, 16), opt_shape=(2, 64, 16), max_shape=(4, 50000, 16), name="x")]
    path = str(tmp_path / "wide.ep")
    flexrt.save(flexrt.compile(model, ir="dynamo", arg_inputs=inputs, device="cpu"), path, arg_inputs=inputs)
    with local_serve(_free_port()) as url:
        config = ServeConfig.from_mapping({"artifact": path, "name": "wide", "batch_dims": "x:0", "frontends": 1,
                                           "num_cpus": 0.5, "graceful_shutdown_timeout_s": 5})
        serve.run(build_app(config), name="wide", route_prefix="/", blocking=False)
        x = torch.rand(2, 40000, 16) + 0.1  # 5.1 MB of float32
        out = InferenceClient(url, "wide", timeout=60).infer({"x": x}, binary=True)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out["output_0"] if "output_0" in out else next(iter(out.values()))),
                                   model(x), rtol=1e-4, atol=1e-5)


def test_the_model_tier_is_called_over_grpc_only_where_replicas_take_large_messages(monkeypatch) -> None:
    from flexrt.serving import deployment

    class Handle:
        def options(self, **kw: object) -> dict:
            return kw

    monkeypatch.setenv(ray_env.GRPC_LIMIT, str(ray_env.GRPC_MESSAGE_BYTES))
    assert deployment._model_handle(Handle())["_by_reference"] is False
    monkeypatch.delenv(ray_env.GRPC_LIMIT)
    handle = Handle()
    assert deployment._model_handle(handle) is handle  # Ray's 4 MiB: actor calls, no size limit


def test_warm_up_sizes_are_checked_before_ray_starts(artifact: tuple[str, torch.nn.Module]) -> None:
    path, _ = artifact
    with pytest.raises(ServingError, match=r"x:1: \[999\] fit no profile"):
        cli.check(ServeConfig.from_mapping({"artifact": path, "name": "tiny", "warm_up_sizes": "x:1=4,999"}))


def _with_engines(path: str, out: str, replace: Callable[[bytes], bytes]) -> str:
    """A copy of the artifact at `path` with every engine member's bytes replaced."""
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for member in zin.namelist():
            data = zin.read(member)
            zout.writestr(member, replace(data) if member.startswith("engines/") else data)
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the manifest-only check is for hosts without a GPU")
def test_a_gpu_deployment_is_checked_from_the_manifest_where_there_is_no_gpu(artifact: tuple[str, torch.nn.Module], tmp_path) -> None:
    """`flexrt serve --device cuda` on a host without a GPU (the replicas have one: a cluster's head node)
    checks the manifest and the batch dims without loading engines, which the loader would refuse
    there for a CUDA artifact; the replicas load them (and check their checksums). A member of the
    wrong size is still refused before Ray starts."""
    path, _ = artifact
    cli.check(ServeConfig.from_mapping({"artifact": path, "name": "tiny", "device": "cuda", "batch_dims": "x:0"}))
    with pytest.raises(ServingError, match="has no input 'y'"):
        cli.check(ServeConfig.from_mapping({"artifact": path, "name": "tiny", "device": "cuda", "batch_dims": "y:0"}))
    zeroed = _with_engines(path, str(tmp_path / "zeroed.ep"), lambda data: bytes(len(data)))
    cli.check(ServeConfig.from_mapping({"artifact": zeroed, "name": "tiny", "device": "cuda"}))  # engines not read here
    with pytest.raises(ArtifactError, match="checksum"):  # where they can run, they are loaded
        cli.check(ServeConfig.from_mapping({"artifact": zeroed, "name": "tiny", "device": "cpu"}))
    cut = _with_engines(path, str(tmp_path / "cut.ep"), lambda data: data[:100])
    with pytest.raises(ArtifactError, match="damaged"):
        cli.check(ServeConfig.from_mapping({"artifact": cut, "name": "tiny", "device": "cuda"}))


def test_deployment_options_resources_autoscaling_and_backpressure() -> None:
    from flexrt.serving.deployment import deployment_options

    gpu = deployment_options(ServeConfig.from_mapping({"artifact": "m.ep", "device": "cuda", "replicas": "auto",
                                                       "max_replicas": 3, "batch_dims": "x:0", "max_batch_size": 16}))
    assert gpu["ray_actor_options"]["num_gpus"] == 1
    assert gpu["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 16}
    assert "num_replicas" not in gpu and gpu["max_ongoing_requests"] == 32
    shared = deployment_options(ServeConfig.from_mapping({"artifact": "m.ep", "device": "cuda", "replicas": 8,
                                                          "replicas_per_gpu": 4}))
    assert shared["ray_actor_options"]["num_gpus"] == 0.25 and shared["num_replicas"] == 8  # 4 per GPU, 2 GPUs
    assert shared["logging_config"] == {"enable_access_log": True}
    quiet = deployment_options(ServeConfig.from_mapping({"artifact": "m.ep", "access_log": False}))
    assert quiet["logging_config"] == {"enable_access_log": False}
    cpu = deployment_options(ServeConfig.from_mapping({"artifact": "m.ep", "replicas": 2, "num_cpus": 0.5, "max_queue": 7}))
    assert cpu["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0}
    assert cpu["num_replicas"] == 2 and cpu["max_queued_requests"] == 7
    assert cpu["backpressure_config"].status_code == 503 and cpu["backpressure_config"].retry_after_s == 1.0


def test_two_tier_options_put_the_queue_bound_on_the_front_ends() -> None:
    from flexrt.serving.deployment import deployment_options, frontend_options

    config = ServeConfig.from_mapping({"artifact": "m.ep", "device": "cuda", "frontends": 6, "max_queue": 9,
                                       "batch_dims": "x:0", "max_batch_size": 32})
    front, model = frontend_options(config), deployment_options(config)
    assert front["num_replicas"] == 6 and front["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0}
    assert front["max_queued_requests"] == 9 and front["backpressure_config"].status_code == 503
    assert front["name"] == "flexrt-m" and model["name"] == "flexrt-m-model"
    assert model["ray_actor_options"]["num_gpus"] == 1 and model["num_replicas"] == 1
    assert model["max_queued_requests"] == -1 and "backpressure_config" not in model
    assert model["max_ongoing_requests"] >= 6 * config.ongoing  # every front end's calls at once
    assert model["logging_config"]["enable_access_log"] is False and front["logging_config"]["enable_access_log"]
    assert config.http_replicas == 6
    assert ServeConfig.from_mapping({"artifact": "m.ep", "replicas": "auto", "min_replicas": 2}).http_replicas == 2
    with pytest.raises(ServingError, match="frontends must be >= 0"):
        ServeConfig.from_mapping({"artifact": "m.ep", "frontends": -1})


def test_direct_ingress_each_replica_answers_on_its_own_port(artifact: tuple[str, torch.nn.Module], monkeypatch) -> None:
    """With direct ingress (`flexrt serve --direct-ingress`), each of two replicas answers the v2
    protocol on its own loopback port, past the proxy: right answers, its own identity, its errors,
    and 503s with Retry-After past the queue bound, as through the proxy."""
    from flexrt.serving import ingress

    monkeypatch.setenv(ingress.FLAG, "1")  # before Ray starts: its processes read it then
    monkeypatch.setenv(ingress.DRAIN, "1")
    path, model = artifact
    with local_serve(_free_port()) as url:
        config = ServeConfig.from_mapping({"artifact": path, "name": "tiny", "batch_dims": "x:0", "replicas": 2,
                                           "max_batch_size": 8, "batch_wait_ms": 20, "max_queue": 8, "max_ongoing": 4,
                                           "num_cpus": 0.5, "graceful_shutdown_timeout_s": 5})
        serve.run(build_app(config), name="tiny", route_prefix="/", blocking=False)
        urls = ingress.replica_urls("tiny", 2, "127.0.0.1", timeout_s=60)
        assert len(urls) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls) and url not in urls
        seen = set()
        for k, replica in enumerate(urls):
            x = torch.rand(1 + k, 5, 16) + 0.1
            out = InferenceClient(replica, "tiny").infer({"x": x})
            with torch.no_grad():
                torch.testing.assert_close(torch.from_numpy(out["y"]), model(x)["y"], rtol=1e-4, atol=1e-5)
            stats = json.loads(urllib.request.urlopen(f"{replica}/v2/models/tiny/stats", timeout=30).read())["replica"]
            seen.add(stats["replica_id"])
            status, payload, _ = _post(f"{replica}/v2/models/tiny/infer", json.dumps(encode_request({"x": torch.rand(1, 99, 16)})).encode())
            assert status == 400 and "dim 1" in payload["error"], payload
        assert len(seen) == 2  # each port is one replica
        assert InferenceClient(url, "tiny").ready()  # the proxy still serves beside them
        big = json.dumps(encode_request({"x": torch.rand(MAX_B, MAX_S, 16)})).encode()
        with concurrent.futures.ThreadPoolExecutor(64) as pool:  # a flood on one replica's port
            results = list(pool.map(lambda _: _post(f"{urls[0]}/v2/models/tiny/infer", big, timeout=90), range(64)))
        codes = [r[0] for r in results]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
        refused = next(r for r in results if r[0] == 503)
        assert {k.lower(): v for k, v in refused[2].items()}.get("retry-after") == "1"


def test_a_crashed_replica_fails_its_requests_and_is_replaced(artifact: tuple[str, torch.nn.Module]) -> None:
    """A replica killed while it holds a request (waiting in its batch queue): the client gets an
    error status, not silence; Ray starts a new replica (another pid) that answers correctly."""
    import signal

    path, model = artifact
    start = time.monotonic()
    with local_serve(_free_port()) as url:
        config = ServeConfig.from_mapping({
            "artifact": path, "name": "tiny", "batch_dims": "x:0", "max_batch_size": 8, "batch_wait_ms": 4000,
            "num_cpus": 0.5, "graceful_shutdown_timeout_s": 5,
        })
        serve.run(build_app(config), name="tiny", route_prefix="/", blocking=False)
        x = torch.rand(1, 5, 16) + 0.1
        body = json.dumps(encode_request({"x": x.numpy()})).encode()
        status, _, _ = _post(f"{url}/v2/models/tiny/infer", body)  # up, and warm (waits out one batch)
        assert status == 200
        stats = json.loads(urllib.request.urlopen(f"{url}/v2/models/tiny/stats", timeout=30).read())["replica"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(_post, f"{url}/v2/models/tiny/infer", body, 60.0)
            time.sleep(1.0)  # the request now waits in the replica's 4 s batch window
            os.kill(stats["pid"], signal.SIGKILL)
            status, payload, _ = held.result(timeout=60)
        assert status >= 500, (status, payload)  # an error, not silence and not a fake answer
        new_pid = None
        while time.monotonic() - start < DEADLINE_S and new_pid is None:  # bounded: Ray restarts the replica
            time.sleep(1.0)
            try:
                replica = json.loads(urllib.request.urlopen(f"{url}/v2/models/tiny/stats", timeout=10).read())["replica"]
            except (urllib.error.URLError, OSError, ValueError):
                continue
            new_pid = replica["pid"] if replica["pid"] != stats["pid"] else None
        assert new_pid is not None, "no new replica within the deadline"
        client = InferenceClient(url, "tiny")
        out = client.infer({"x": x})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(out["y"]), model(x)["y"], rtol=1e-4, atol=1e-5)


def test_metrics_reach_rays_prometheus_endpoint(artifact: tuple[str, torch.nn.Module]) -> None:
    """flexrt's counters and histograms appear on Ray's Prometheus endpoint (as `ray_flexrt_*`), with
    the requests just sent counted by status."""
    path, _ = artifact
    metrics_port = _free_port()
    with local_serve(_free_port(), metrics_port) as url:
        config = ServeConfig.from_mapping({"artifact": path, "name": "tiny", "batch_dims": "x:0", "num_cpus": 0.5})
        serve.run(build_app(config), name="tiny", route_prefix="/", blocking=False)
        client = InferenceClient(url, "tiny")
        for _ in range(5):
            client.infer({"x": torch.rand(1, 3, 16)})
        requests: list[str] = []
        page, start = "", time.monotonic()
        while time.monotonic() - start < 60 and not any('code="200"' in line for line in requests):  # exported every few s
            time.sleep(2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
                    page = r.read().decode()
            except (urllib.error.URLError, OSError):
                continue
            requests = [line for line in page.splitlines() if "flexrt_requests" in line and not line.startswith("#")]
        counts = [float(line.rsplit(" ", 1)[1]) for line in requests if 'code="200"' in line and 'model="tiny"' in line]
        assert counts and sum(counts) >= 5, requests[:20]
        for name in ("ray_flexrt_request_latency_ms", "ray_flexrt_queue_time_ms", "ray_flexrt_batch_rows",
                     "ray_flexrt_profile_picks"):
            assert name in page, name
