"""The pre-traffic hook: CodeDeploy asks it to vouch for a new version before traffic moves.

The image carries the model's known-answer set (``lambda_function/known/``: photos that
``python -m convert`` saw the model answer right and confidently, and ``known.json`` naming
their categories). The hook sends each photo to the NEW version (``TARGET_VERSION_ARN``, the
version this deployment publishes) exactly as a caller would, and reports ``Succeeded`` to
CodeDeploy only when every answer is the expected category; a wrong answer, an error answer,
a failed invocation or a missing set reports ``Failed``, and CodeDeploy rolls back before any
request reaches the version (docs/deployment.md).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lambda_function import aws, observe
from lambda_function.config import SERVED_MODEL

KNOWN_DIR = Path(__file__).resolve().parent / "known"
"""Where the image bakes the known-answer set in (see the Dockerfile)."""

MANIFEST = "known.json"
TARGET = "TARGET_VERSION_ARN"
SUCCEEDED, FAILED = "Succeeded", "Failed"
INVOKE_TIMEOUT_S = 60.0
"""Per photo: the first one may wait for the new version's cold start (model load)."""


class KnownSetError(ValueError):
    """The known-answer set is missing or malformed: nothing can vouch for the version."""


@dataclass(frozen=True)
class KnownPhoto:
    """A photo of the set and the category its model answers for it."""

    file: str
    category: str


@dataclass(frozen=True)
class Check:
    """One photo's outcome on the new version."""

    file: str
    expected: str
    answered: str | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.answered == self.expected


def load_known(directory: Path = KNOWN_DIR) -> list[KnownPhoto]:
    """The set's photos from ``directory/known.json``; every file must be there."""
    manifest = directory / MANIFEST
    try:
        photos = json.loads(manifest.read_text(encoding="utf-8"))["photos"]
        known = [KnownPhoto(str(p["file"]), str(p["category"])) for p in photos]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KnownSetError(
            f"Expected a known-answer manifest {manifest} with photos [{{file, category}}]. "
            f"Received: {type(exc).__name__}: {exc}"
        ) from exc
    if not known:
        raise KnownSetError(f"Expected at least one known photo in {manifest}. Received none")
    missing = [p.file for p in known if not (directory / Path(p.file).name).is_file()]
    if missing:
        raise KnownSetError(f"Expected the known photos beside {manifest}. Missing: {missing}")
    return known


def check_photo(client: Any, target: str, directory: Path, photo: KnownPhoto) -> Check:
    """Invoke ``target`` with the photo (``{"image": base64}``) and compare its answer."""
    data = (directory / Path(photo.file).name).read_bytes()
    payload = json.dumps({"image": base64.b64encode(data).decode("ascii")})
    try:
        reply = client.invoke(FunctionName=target, Payload=payload.encode())
        answer = json.loads(reply["Payload"].read())
    except Exception as exc:  # noqa: BLE001 - any failure to get an answer fails the check
        return Check(photo.file, photo.category, error=f"invoke failed: {exc}")
    if reply.get("FunctionError"):
        message = answer.get("errorMessage", answer) if isinstance(answer, dict) else answer
        return Check(photo.file, photo.category, error=f"function error: {message}")
    if not isinstance(answer, dict) or "error" in answer or "category" not in answer:
        return Check(photo.file, photo.category, error=f"error answer: {answer}")
    return Check(photo.file, photo.category, answered=str(answer["category"]))


def run_checks(client: Any, target: str, directory: Path = KNOWN_DIR) -> list[Check]:
    """Every photo of the set through ``target``, in the manifest's order."""
    return [check_photo(client, target, directory, photo) for photo in load_known(directory)]


def verdict(checks: Sequence[Check]) -> str:
    """``Succeeded`` when there were checks and every one passed."""
    return SUCCEEDED if checks and all(c.passed for c in checks) else FAILED


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Check the new version and report the verdict for this CodeDeploy lifecycle hook."""
    deployment_id, hook_id = _hook_ids(event)
    checks: list[Check] = []
    reason = ""
    try:
        target = os.environ.get(TARGET, "")
        if not target:
            raise KnownSetError(f"Expected {TARGET} (the new version's ARN). Received none")
        checks = run_checks(_client("lambda", INVOKE_TIMEOUT_S), target, _known_dir())
    except Exception as exc:  # noqa: BLE001 - whatever stops the checks fails the deploy
        reason = f"{type(exc).__name__}: {exc}"
    status = verdict(checks) if not reason else FAILED
    failed = [asdict(c) for c in checks if not c.passed]
    observe.emit(
        {
            "event": "pre_traffic_check",
            "deployment_id": deployment_id,
            "status": status,
            "checked": len(checks),
            "failed": failed,
            **({"reason": reason} if reason else {}),
        }
    )
    _client("codedeploy", 10.0).put_lifecycle_event_hook_execution_status(
        deploymentId=deployment_id, lifecycleEventHookExecutionId=hook_id, status=status
    )
    return {"status": status, "checked": len(checks), "failed": failed, "reason": reason}


class LocalFunction:
    """A ``lambda`` client stand-in that answers ``invoke`` with this process's predict
    handler (``MODEL_PATH`` picks the model): the same check before anything is deployed."""

    def invoke(self, *, FunctionName: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803
        from lambda_function.handler import lambda_handler

        answer = lambda_handler(json.loads(Payload), None)
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lambda_function.deploy_check``: the check, locally, on a model file."""
    parser = argparse.ArgumentParser(
        prog="python -m lambda_function.deploy_check",
        description="Run a known-answer set through the predict handler in this process, "
        "as the pre-traffic hook runs it through a new version. Exit 0 when every answer "
        "is right, 1 otherwise.",
    )
    parser.add_argument("--model", type=Path, default=SERVED_MODEL)
    parser.add_argument("--known", type=Path, help="the set (default: known/ beside --model)")
    args = parser.parse_args(argv)
    os.environ["MODEL_PATH"] = str(args.model)
    os.environ.pop("MODEL_S3_URI", None)
    directory = args.known or args.model.with_name(KNOWN_DIR.name)
    try:
        checks = run_checks(LocalFunction(), "local", directory)
    except KnownSetError as exc:
        print(f"deploy_check: error: {exc}", file=sys.stderr)
        return 2
    for check in checks:
        if not check.passed:
            print(f"FAILED {check.file}: expected {check.expected}, got "
                  f"{check.answered or check.error}")  # fmt: skip
    status = verdict(checks)
    print(f"{status}: {sum(c.passed for c in checks)}/{len(checks)} known photos answered right")
    return 0 if status == SUCCEEDED else 1


def _hook_ids(event: Any) -> tuple[str, str]:
    """The deployment and hook execution ids, without which nothing can be reported."""
    names = ("DeploymentId", "LifecycleEventHookExecutionId")
    if not isinstance(event, dict) or not all(isinstance(event.get(n), str) for n in names):
        keys = sorted(event) if isinstance(event, dict) else type(event).__name__
        raise ValueError(
            f"Expected a CodeDeploy lifecycle event with {' and '.join(names)}. Received: {keys}"
        )
    return event[names[0]], event[names[1]]


def _known_dir() -> Path:
    """The baked-in set, or ``KNOWN_SET_DIR`` (a local run against another set, tests)."""
    return Path(os.environ.get("KNOWN_SET_DIR") or KNOWN_DIR)


def _client(service: str, read_timeout_s: float) -> Any:
    return aws.client(service, connect_timeout_s=3.0, read_timeout_s=read_timeout_s, attempts=2)


if __name__ == "__main__":
    sys.exit(main())
