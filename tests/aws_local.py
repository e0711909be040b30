"""AWS without an account: moto as a real HTTP endpoint, and what the tests build on it.

``moto_endpoint`` starts ``ThreadedMotoServer`` on 127.0.0.1 and points every boto3 client
there through ``AWS_ENDPOINT_URL`` (dummy credentials, one region). ``FaultyProxy`` sits
in front of it for one service (``AWS_ENDPOINT_URL_DYNAMODB``...) and answers chosen
requests with the error AWS would send (throttling, a 5xx), so a test sees exactly what a
deployed function sees. The table, the events and the backfill batches are built from
``template.yaml`` and ``events/``, so they cannot drift from what is deployed.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import yaml

from lambda_function import photos, results, suggestions
from tests.lambda_testing import load_event

REPO = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """A moto server on loopback for the block; the process's AWS settings point at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its accounts in the process: start every block from an empty one
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    saved = {name: os.environ.get(name) for name in [*AWS_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update({**AWS_ENV, "AWS_ENDPOINT_URL": endpoint})
    clear_clients()
    try:
        yield endpoint
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear_clients()


def clear_clients() -> None:
    """Forget the function's cached boto3 clients (they captured the endpoint)."""
    photos.s3_client.cache_clear()
    results.dynamodb_client.cache_clear()
    suggestions.dynamodb_client.cache_clear()


# -- template.yaml -------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (``!Ref``, ``!Sub``...) kept as ``{Fn: value}``."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _tag)


def template() -> dict[str, Any]:
    """``template.yaml`` as a dict; short tags become ``{"Ref": ...}``, ``{"Fn::Sub": ...}``."""
    return yaml.load((REPO / "template.yaml").read_text(), Loader=_CfnLoader)


def resource(name: str) -> dict[str, Any]:
    return template()["Resources"][name]


def create_results_table(name: str) -> None:
    """The results table with the key schema ``template.yaml`` gives it."""
    import boto3

    properties = resource("ResultsTable")["Properties"]
    boto3.client("dynamodb").create_table(
        TableName=name,
        BillingMode=properties["BillingMode"],
        AttributeDefinitions=properties["AttributeDefinitions"],
        KeySchema=properties["KeySchema"],
    )


def state_machine_definition() -> dict[str, Any]:
    """The backfill's definition as written (``DefinitionUri`` in the template)."""
    uri = resource("BackfillStateMachine")["Properties"]["DefinitionUri"]
    return dict(yaml.safe_load((REPO / uri).read_text()))


def as_built(source: dict[str, Any], image_uri: str) -> dict[str, Any]:
    """``source`` as ``sam build`` and ``sam deploy`` hand it on: each image function with its
    ``ImageUri``, each state machine with the definition its ``DefinitionUri`` file holds."""
    built = copy.deepcopy(source)
    for item in built["Resources"].values():
        properties = item.get("Properties", {})
        if item["Type"] == "AWS::Serverless::Function" and properties.get("PackageType") == "Image":
            properties["ImageUri"] = image_uri
        if item["Type"] == "AWS::Serverless::StateMachine" and "DefinitionUri" in properties:
            uri = properties.pop("DefinitionUri")
            properties["Definition"] = yaml.safe_load((REPO / uri).read_text())
    return built


def backfill_definition(function_arn: str, report_bucket: str) -> dict[str, Any]:
    """The state machine's definition as deployed: the file's, substitutions made."""
    machine = resource("BackfillStateMachine")["Properties"]
    text = json.dumps(state_machine_definition())
    for name, value in {"UploadFunctionArn": function_arn, "ReportBucket": report_bucket}.items():
        assert name in machine["DefinitionSubstitutions"], name
        text = text.replace("${" + name + "}", value)
    return json.loads(text)


# -- events ----------------------------------------------------------------------------


def s3_put_event(
    bucket: str, key: str, etag: str, size: int, version_id: str = ""
) -> dict[str, Any]:
    """``events/s3-put.json`` (from ``sam local generate-event s3 put``) for one object, its key
    encoded as S3 encodes it (``+`` for spaces)."""
    event = load_event("s3-put.json")
    record = event["Records"][0]
    record["s3"]["bucket"].update({"name": bucket, "arn": f"arn:aws:s3:::{bucket}"})
    record["s3"]["object"].update({"key": quote_plus(key, safe="/"), "eTag": etag, "size": size})
    if version_id:
        record["s3"]["object"]["versionId"] = version_id
    return event


def many_records(*events: dict[str, Any]) -> dict[str, Any]:
    """One notification carrying the records of several."""
    return {"Records": [copy.deepcopy(e["Records"][0]) for e in events]}


def distributed_map_batches(
    bucket: str, prefix: str, batch_input: dict[str, Any], batch_size: int
) -> list[dict[str, Any]]:
    """What the backfill's Distributed Map hands its function: the ItemReader's
    ``ListObjectsV2`` items (every page; ``Etag`` quoted, ``LastModified`` in epoch seconds,
    as AWS documents them) in ItemBatcher batches of ``batch_size`` with ``BatchInput``."""
    import boto3

    items = []
    pages = boto3.client("s3").get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            items.append(
                {
                    "Etag": entry["ETag"],
                    "Key": entry["Key"],
                    "LastModified": int(entry["LastModified"].timestamp()),
                    "Size": entry["Size"],
                    "StorageClass": entry.get("StorageClass", "STANDARD"),
                }
            )
    return [
        {"BatchInput": batch_input, "Items": items[start : start + batch_size]}
        for start in range(0, len(items), batch_size)
    ]


def rows(table: str) -> list[dict[str, Any]]:
    """Every row of the table, as plain values (read from moto itself, never via a proxy)."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    pages = client.get_paginator("scan").paginate(TableName=table)
    return [results.from_item(item) for page in pages for item in page["Items"]]


# -- faults ----------------------------------------------------------------------------

HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "date", "server"}
Fault = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, str], bytes] | None]
"""(path, headers, body) -> the error answer to send instead, or None to forward."""


class FaultyProxy(ThreadingHTTPServer):
    """Forwards every request to ``upstream`` unless ``fault`` answers it first."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.fault: Fault | None = None
        self.faults_sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: FaultyProxy
    protocol_version = "HTTP/1.1"

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        headers = {k: v for k, v in self.headers.items()}
        fault = self.server.fault(self.path, headers, body) if self.server.fault else None
        if fault is not None:
            self.server.faults_sent += 1
            status, extra, payload = fault
        else:
            request = urllib.request.Request(
                self.server.upstream + self.path, data=body or None, method=self.command
            )
            for name, value in headers.items():
                if name.lower() not in {"host", "content-length", "connection"}:
                    request.add_header(name, value)
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    status, payload = answer.status, answer.read()
                    extra = dict(answer.headers.items())
            except urllib.error.HTTPError as error:
                status, payload, extra = error.code, error.read(), dict(error.headers.items())
        self.send_response(status)
        for name, value in extra.items():
            if name.lower() not in HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def do_PUT(self) -> None:
        self._relay()

    def do_HEAD(self) -> None:
        self._relay()

    def do_DELETE(self) -> None:
        self._relay()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def faulty_proxy(upstream: str) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(upstream)
    thread = threading.Thread(target=proxy.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def dynamodb_throttling(target: str = "PutItem") -> Fault:
    """DynamoDB's answer to a throttled ``target`` call (botocore retries, then raises)."""

    def fault(path: str, headers: dict[str, str], body: bytes) -> Any:
        if headers.get("X-Amz-Target", "").endswith(f".{target}"):
            message = {
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput was exceeded.",
            }
            return 400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(message).encode()
        return None

    return fault
