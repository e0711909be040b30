"""Requests to answers: fetch or take the bytes, preprocess, classify.

The service returns what it did as values: an :class:`Answer` with one :class:`ItemResult`
per image (its model input or its error, its bytes, decoded size and timings). The handler
builds the request's log line from them; nothing is threaded through the calls to be filled in.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lambda_function.config import Config
from lambda_function.errors import ServiceError, to_service_error
from lambda_function.events import Item, Request
from lambda_function.fetch import FetchPolicy, LookupShare, fetch
from lambda_function.model import Classifier, download_model
from lambda_function.preprocessing import prepare

FETCH_WORKERS = 4


@dataclass(frozen=True)
class ItemResult:
    """One image's outcome: its model input or the error that answers it, and what it cost."""

    input: np.ndarray | None = None
    error: ServiceError | None = None
    bytes: int = 0
    width: int = 0
    height: int = 0
    fetch_ms: float = 0.0
    decode_ms: float = 0.0


@dataclass(frozen=True)
class Answer:
    """The payload of a request, or the error answering its single image, and its items."""

    items: tuple[ItemResult, ...]
    payload: dict[str, Any] = field(default_factory=dict)
    error: ServiceError | None = None
    inference_ms: float = 0.0


@dataclass(frozen=True)
class Service:
    """Everything built once per container: settings, fetch policy and the model."""

    config: Config
    classifier: Classifier
    policy: FetchPolicy

    @classmethod
    def from_config(cls, config: Config) -> Service:
        """Load the model (downloading it first if it lives in S3) and warm it up."""
        path = download_model(config.model_s3_uri) if config.model_s3_uri else config.model_path
        classifier = Classifier.load(
            path,
            intra_op_threads=config.intra_op_threads,
            inter_op_threads=config.inter_op_threads,
        )
        classifier.warm_up()
        return cls(config, classifier, FetchPolicy.from_config(config))

    def deadline(self, remaining_s: float) -> float:
        """When fetching must be over, given the time left to the invocation."""
        budget = min(self.config.fetch_timeout_s, remaining_s - self.config.reserve_s)
        return time.monotonic() + budget

    def answer(self, request: Request, deadline: float) -> Answer:
        """One answer, or ``{"results": [...]}`` where each item succeeds or fails alone."""
        items = self._items(request.items, deadline)
        inputs = [item.input for item in items if item.input is not None]
        started = time.monotonic()
        answers = iter(self._describe_all(np.concatenate(inputs)) if inputs else [])
        inference_ms = _elapsed_ms(started) if inputs else 0.0
        if not request.batch:
            (item,) = items
            if item.error is not None:
                return Answer(items, error=item.error)
            payload = next(answers)
            return Answer(items, payload=payload, inference_ms=inference_ms)
        results = []
        for source, item in zip(request.items, items, strict=True):
            if item.error is not None:
                results.append({"url": source.url, **_item_error(item.error)})
            else:
                results.append({"url": source.url, **next(answers)})
        return Answer(items, payload={"results": results}, inference_ms=inference_ms)

    def _describe_all(self, batch: np.ndarray) -> list[dict[str, Any]]:
        """One inference over ``batch``: each photo's answer."""
        probabilities, distances = self.classifier.predict_with_distances(batch)
        if distances is None:
            return [self.classifier.describe(p) for p in probabilities]
        return [
            self.classifier.describe(p, float(d))
            for p, d in zip(probabilities, distances, strict=True)
        ]

    def _items(self, items: tuple[Item, ...], deadline: float) -> tuple[ItemResult, ...]:
        lookups = LookupShare()  # one request cannot hold every pending name lookup
        if len(items) == 1:
            return (self._item(items[0], deadline, lookups),)
        with ThreadPoolExecutor(max_workers=min(len(items), FETCH_WORKERS)) as pool:
            return tuple(pool.map(lambda item: self._item(item, deadline, lookups), items))

    def _item(self, item: Item, deadline: float, lookups: LookupShare) -> ItemResult:
        """One image fetched (or taken from the request) and prepared, or the error it met."""
        data, fetch_ms = item.data or b"", 0.0
        started = time.monotonic()
        try:
            # Both are already within the byte cap: the fetcher and the event parser check it.
            if item.url:
                data = fetch(item.url, self.policy, deadline, lookups)
                fetch_ms = _elapsed_ms(started)
            decoding = time.monotonic()
            size = self.classifier.metadata.image_size
            # Decoding ends by half the reserve after the fetch deadline; the rest is inference's.
            decode_by = deadline + self.config.reserve_s / 2
            x, (width, height) = prepare(
                data, size, max_pixels=self.config.max_pixels, deadline=decode_by
            )
            return ItemResult(x, None, len(data), width, height, fetch_ms, _elapsed_ms(decoding))
        except Exception as exc:  # noqa: BLE001 - each item fails on its own; mapped here
            error = to_service_error(exc)
            if item.url and not fetch_ms:
                fetch_ms = _elapsed_ms(started)  # the time a failed fetch took
            elif item.url and item.url.startswith("s3://"):
                error = _withheld(error)
            return ItemResult(error=error, bytes=len(data), fetch_ms=fetch_ms)


def _withheld(error: ServiceError) -> ServiceError:
    """The same answer without what it says about the bytes (size, first bytes, pixels):
    an ``s3://`` object is the deployment's, not the caller's. The log keeps the message."""
    withheld = type(error)(
        f"Expected an image this service decodes. The s3:// object is not one ({error.code}); "
        "the request id identifies why in the function's log.",
        code=error.code,
        detail=error.message,
    )
    return to_service_error(withheld)


def _item_error(error: ServiceError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message}, "status": error.status}


def _elapsed_ms(since: float) -> float:
    return (time.monotonic() - since) * 1000
