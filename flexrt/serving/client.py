"""A small v2 client on the standard library (urllib): no Ray, no requests/httpx needed.

    from flexrt.serving.client import InferenceClient
    client = InferenceClient("http://127.0.0.1:8000", "model")
    outputs = client.infer({"x": np.random.rand(2, 16).astype(np.float32)})   # {name: np.ndarray}
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from flexrt.errors import FlexrtError
from flexrt.serving.protocol import BINARY_HEADER, decode_response, encode_binary_request, encode_request

logger = logging.getLogger(__name__)


class InferenceError(FlexrtError):
    """The server answered with an error status; `.status` is the HTTP code, `.retry_after` its hint (s)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class InferenceClient:
    """Talks to one model of a flexrt (or any v2) server. Thread-safe: each call is its own request."""

    def __init__(self, url: str, model: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._model = model

    @property
    def model(self) -> str:
        """The model's name; asked of the server (its only model) when not given."""
        if self._model is None:
            models = self._get("/v2/models").get("models", [])
            if len(models) != 1:
                raise FlexrtError(f"{self.url} serves {len(models)} models ({models}); name one")
            self._model = models[0]
        return self._model

    # -- plumbing ----------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: Any = None, header_length: int | None = None) -> tuple[int, Any]:
        """(status, parsed JSON), or (status, (raw body, JSON length)) for a response with binary data."""
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if header_length is not None:
            req.add_header("Content-Type", "application/octet-stream")
            req.add_header(BINARY_HEADER, str(header_length))
        elif data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                binary = resp.headers.get(BINARY_HEADER)
                if binary is not None:
                    return resp.status, (raw, int(binary))
                return resp.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw).get("error", raw.decode(errors="replace"))
            except ValueError:
                message = raw.decode(errors="replace")
            retry = e.headers.get("Retry-After")
            raise InferenceError(e.code, str(message).strip(), float(retry) if retry else None) from None

    def _get(self, path: str) -> dict[str, Any]:
        return self._send("GET", path)[1]

    # -- API -------------------------------------------------------------------------------------

    def live(self) -> bool:
        try:
            return self._send("GET", "/v2/health/live")[0] == 200
        except (InferenceError, OSError):
            return False

    def ready(self) -> bool:
        try:
            return self._send("GET", f"/v2/models/{self.model}/ready")[0] == 200
        except (InferenceError, OSError):
            return False

    def metadata(self) -> dict[str, Any]:
        return self._get(f"/v2/models/{self.model}")

    def infer_raw(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a ready v2 body; returns the v2 response body (parsed JSON; `(raw body, JSON length)` when
        the body asked for binary outputs: `decode_response(*answer)` reads both). Raises InferenceError on 4xx/5xx."""
        return self._send("POST", f"/v2/models/{self.model}/infer", body)[1]

    def infer(self, inputs: Mapping[str, Any], request_id: str | None = None, binary: bool = False) -> dict[str, np.ndarray]:
        """{input name: numpy array or torch tensor} -> {output name: numpy array}. `binary=True` sends
        the inputs' raw bytes and asks for the outputs' (the v2 binary tensor extension): no JSON
        numbers either way, much cheaper for large tensors, and NaN/infinity come back as they are."""
        if binary:
            body, length = encode_binary_request(inputs, request_id, binary_outputs=True)
            answer = self._send("POST", f"/v2/models/{self.model}/infer", body, length)[1]
        else:
            answer = self.infer_raw(encode_request(inputs, request_id))
        return decode_response(*answer) if isinstance(answer, tuple) else decode_response(answer)
