"""Requests to answers: fetch or take the bytes, preprocess, classify."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from lambda_function.config import Config
from lambda_function.errors import ServiceError, to_service_error
from lambda_function.events import Item, Request
from lambda_function.fetch import FetchPolicy, fetch
from lambda_function.model import Classifier, download_model
from lambda_function.observe import ItemTrace, RequestTrace, elapsed_ms
from lambda_function.preprocessing import decode_image, model_input

FETCH_WORKERS = 4


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

    def answer(
        self, request: Request, deadline: float, trace: RequestTrace | None = None
    ) -> dict[str, Any]:
        """A single answer, or ``{"results": [...]}`` where each item succeeds or fails alone.

        ``trace`` (from :meth:`RequestTrace.describe`) collects sizes and timings."""
        if trace is None or len(trace.items) != len(request.items):
            trace = RequestTrace()
            trace.describe(request)
        inputs = self._inputs(request.items, trace.items, deadline)
        if not request.batch:
            if isinstance(inputs[0], ServiceError):
                raise inputs[0]
            return self.classifier.describe(self._predict([inputs[0]], trace)[0])
        good = [x for x in inputs if not isinstance(x, ServiceError)]
        probabilities = iter(self._predict(good, trace) if good else [])
        results = []
        for item, x in zip(request.items, inputs, strict=True):
            if isinstance(x, ServiceError):
                results.append({"url": item.url, **_item_error(x)})
            else:
                results.append({"url": item.url, **self.classifier.describe(next(probabilities))})
        return {"results": results}

    def _predict(self, inputs: list[np.ndarray], trace: RequestTrace) -> np.ndarray:
        started = time.monotonic()
        probabilities = self.classifier.predict(np.concatenate(inputs))
        trace.inference_ms = elapsed_ms(started)
        return probabilities

    def _inputs(
        self, items: tuple[Item, ...], traces: list[ItemTrace], deadline: float
    ) -> list[np.ndarray | ServiceError]:
        if len(items) == 1:
            return [self._input(items[0], traces[0], deadline)]
        with ThreadPoolExecutor(max_workers=min(len(items), FETCH_WORKERS)) as pool:
            return list(pool.map(lambda i, t: self._input(i, t, deadline), items, traces))

    def _input(self, item: Item, trace: ItemTrace, deadline: float) -> np.ndarray | ServiceError:
        """One item's model input, or the error that answers it."""
        try:
            # Both are already within the byte cap: the fetcher and the event parser check it.
            started = time.monotonic()
            data = fetch(item.url, self.policy, deadline) if item.url else item.data or b""
            trace.fetch_ms, trace.bytes = elapsed_ms(started) if item.url else 0.0, len(data)
            return self._preprocess(data, trace)
        except Exception as exc:  # noqa: BLE001 - each item fails on its own; mapped here
            return to_service_error(exc)

    def _preprocess(self, data: bytes, trace: ItemTrace) -> np.ndarray:
        """``preprocessing.preprocess`` in its two steps, to see the decoded size on the way."""
        started = time.monotonic()
        image = decode_image(data, max_pixels=self.config.max_pixels)
        trace.width, trace.height = image.size
        x = model_input(image, self.classifier.metadata.image_size)
        trace.decode_ms = elapsed_ms(started)
        return x


def _item_error(error: ServiceError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message}, "status": error.status}
