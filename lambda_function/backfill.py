"""``python -m lambda_function.backfill s3://bucket/prefix/``: classify a whole catalogue.

Starts one execution of the stack's backfill state machine (a Step Functions Distributed
Map over the prefix, ``template.yaml``): it lists the objects, hands the upload function
batches of them, retries what fails transiently, and writes every row to the results
table. ``--dry-run`` only counts the objects. The state machine comes from
``--state-machine``, ``BACKFILL_STATE_MACHINE`` or the outputs of ``--stack``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

STATE_MACHINE_VARIABLE = "BACKFILL_STATE_MACHINE"
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_CONCURRENCY = 20
DEFAULT_TOLERATED_FAILURE_PERCENTAGE = 1.0
MAX_CONCURRENCY = 100
"""Batches in flight at once, at most: the template's UploadConcurrency ceiling. Above the
upload function's reserved concurrency, batches are throttled and fail after their retries."""
MAX_BATCH_SIZE = 64
"""A batch's bytes are all in memory at once: 64 photos at the 10 MB cap fit in 3 GB."""


class UsageError(ValueError):
    """The command line asks for something impossible: said, then exit status 2."""


@dataclass(frozen=True)
class Options:
    bucket: str
    prefix: str
    dry_run: bool = False
    state_machine: str = ""
    stack: str = ""
    batch_size: int = DEFAULT_BATCH_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    tolerated_failure_percentage: float = DEFAULT_TOLERATED_FAILURE_PERCENTAGE

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def execution_input(self) -> dict[str, Any]:
        """What the state machine reads (ItemReader, ItemBatcher and the Map's limits)."""
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "batch_size": self.batch_size,
            "max_concurrency": self.max_concurrency,
            "tolerated_failure_percentage": self.tolerated_failure_percentage,
        }


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` as (bucket, prefix); the prefix may be empty. Control
    characters are refused: ``urlsplit`` would drop tabs and newlines silently, and another
    prefix than the one typed would be backfilled."""
    if any(ord(char) < 32 or ord(char) == 127 for char in uri):
        raise UsageError(
            f"Expected s3://bucket/prefix/ without control characters. Received: {uri!r}"
        )
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"Expected s3://bucket/prefix/. Received: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def count_objects(bucket: str, prefix: str, client: Any = None) -> tuple[int, int]:
    """How many objects (and bytes) the backfill would see; folder placeholders excluded."""
    import boto3

    pages = (client or boto3.client("s3")).get_paginator("list_objects_v2")
    objects = size = 0
    for page in pages.paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            if entry["Key"].endswith("/") and entry["Size"] == 0:
                continue
            objects, size = objects + 1, size + entry["Size"]
    return objects, size


def stack_outputs(stack: str, client: Any = None) -> dict[str, str]:
    """The outputs of a deployed stack, by key."""
    import boto3

    (description,) = (client or boto3.client("cloudformation")).describe_stacks(StackName=stack)[
        "Stacks"
    ]
    return {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}


def state_machine_arn(options: Options) -> str:
    """The state machine to start, checking the prefix against the stack's when known."""
    if options.state_machine:
        return options.state_machine
    if options.stack:
        outputs = stack_outputs(options.stack)
        bucket, prefix = outputs.get("CatalogueBucket", ""), outputs.get("CataloguePrefix", "")
        if bucket and (options.bucket != bucket or not options.prefix.startswith(prefix)):
            raise UsageError(
                f"Expected a URI under s3://{bucket}/{prefix} (the prefix stack "
                f"{options.stack} may read). Received: {options.uri}"
            )
        if outputs.get("UploadFunctionName"):
            check_concurrency(options, outputs["UploadFunctionName"])
        return outputs["BackfillStateMachineArn"]
    if os.environ.get(STATE_MACHINE_VARIABLE):
        return os.environ[STATE_MACHINE_VARIABLE]
    raise UsageError(
        f"Expected --state-machine ARN, --stack NAME or {STATE_MACHINE_VARIABLE}. "
        "Received: none of them."
    )


def check_concurrency(options: Options, function: str, client: Any = None) -> None:
    """Refuse more batches at once than the upload function may run (its reserved
    concurrency): the rest would be throttled, retried, and fail the run."""
    import boto3

    answer = (client or boto3.client("lambda")).get_function_concurrency(FunctionName=function)
    reserved = answer.get("ReservedConcurrentExecutions")
    if reserved is not None and options.max_concurrency > reserved:
        raise UsageError(
            f"Expected --max-concurrency of at most {reserved} (the reserved concurrency of "
            f"{function}, the stack's UploadConcurrency). Received: {options.max_concurrency}"
        )


def start(options: Options, arn: str, client: Any = None) -> str:
    """Start the execution; its ARN."""
    import boto3

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    answer = (client or boto3.client("stepfunctions")).start_execution(
        stateMachineArn=arn,
        name=f"backfill-{stamp}-{uuid.uuid4().hex[:8]}",
        input=json.dumps(options.execution_input()),
    )
    return str(answer["executionArn"])


def how_to_watch(execution_arn: str) -> str:
    region = execution_arn.split(":")[3]
    console = f"https://{region}.console.aws.amazon.com/states/home?region={region}"
    return "\n".join(
        [
            "Watch it:",
            f"  aws stepfunctions describe-execution --execution-arn {execution_arn} "
            "--query status",
            f"  aws stepfunctions list-map-runs --execution-arn {execution_arn}",
            "  aws stepfunctions describe-map-run --map-run-arn <mapRunArn from above>"
            "  # items succeeded / failed / pending",
            f"  {console}#/v2/executions/details/{execution_arn}",
            "Rows land in the results table as batches finish; each batch's outcome is written "
            "under backfill-reports/ in the uploads bucket when the run ends.",
        ]
    )


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m lambda_function.backfill",
        description="Classify every photo under an S3 prefix with the stack's backfill "
        "state machine (Step Functions Distributed Map); rows go to the results table.",
    )
    parser.add_argument("uri", help="s3://bucket/prefix/ of the catalogue")
    parser.add_argument("--dry-run", action="store_true", help="count the objects; start nothing")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state-machine", default="", help="ARN of the backfill state machine")
    where.add_argument("--stack", default="", help="name of the deployed stack (reads its outputs)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="photos per Lambda invocation (ItemBatcher)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        help="batches in flight at once (Map MaxConcurrency); at most "
        f"{MAX_CONCURRENCY} and, with --stack, the upload function's reserved concurrency",
    )
    parser.add_argument(
        "--tolerated-failure-percentage",
        type=float,
        default=DEFAULT_TOLERATED_FAILURE_PERCENTAGE,
        help="batches that may still fail after the retries before the run fails",
    )
    args = parser.parse_args(argv)
    bucket, prefix = parse_uri(args.uri)
    for name, value, low, high in (
        ("--batch-size", args.batch_size, 1, MAX_BATCH_SIZE),
        ("--max-concurrency", args.max_concurrency, 1, MAX_CONCURRENCY),
        ("--tolerated-failure-percentage", args.tolerated_failure_percentage, 0, 100),
    ):
        if not low <= value <= high:
            raise UsageError(f"Expected {name} in [{low}, {high}]. Received: {value}")
    return Options(
        bucket=bucket,
        prefix=prefix,
        dry_run=args.dry_run,
        state_machine=args.state_machine,
        stack=args.stack,
        batch_size=args.batch_size,
        max_concurrency=args.max_concurrency,
        tolerated_failure_percentage=args.tolerated_failure_percentage,
    )


def main(argv: list[str] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        options = parse_args(argv)
        if options.dry_run:
            objects, size = count_objects(options.bucket, options.prefix)
            batches = -(-objects // options.batch_size)
            print(
                f"{objects:,} objects ({size / 1e6:,.1f} MB) under {options.uri}: "
                f"{batches:,} batches of up to {options.batch_size}. Nothing started (--dry-run)."
            )
            return 0
        execution = start(options, state_machine_arn(options))
    except UsageError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as exc:
        print(f"backfill: AWS refused: {exc}", file=sys.stderr)
        return 1
    print(
        f"Started the backfill of {options.uri} (batches of {options.batch_size}, "
        f"at most {options.max_concurrency} at a time)."
    )
    print(f"Execution: {execution}")
    print(how_to_watch(execution))
    return 0


if __name__ == "__main__":
    sys.exit(main())
