"""Serving errors. Kept here (not in flexrt.errors) until the lead decides where they live."""

from __future__ import annotations

from flexrt.errors import FlexrtError, InputSpecError


class ServingError(FlexrtError):
    """The server cannot be set up or started as asked (bad option, missing Ray, artifact unusable for batching)."""


class RequestError(InputSpecError):
    """A request body is malformed (not JSON, missing fields, data that does not match its shape): HTTP 400.

    Subclasses InputSpecError so callers that already catch flexrt's input errors catch this too."""
