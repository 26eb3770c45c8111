"""What a run sent to AWS, from the emulator's recording, in a form two runs can be compared
in: the requests that create, change, delete or invoke something, each with every field
it carries, in the order they were sent.

Left out: reads (Describe, List, Get, Head), whose number depends on how a client waits
and pages, not on what it asks AWS to do; and each request's signature, date, user agent
and invocation id. Normalised: the names that differ from run to run (timestamps,
random suffixes and UUIDs in job names, S3 keys and ARNs become placeholders), and two
spellings of one request that the API treats alike, both listed in `SAME_REQUEST`.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

# Operations that change something: what a run asks AWS to do.
CHANGES = re.compile(r"\.(Create|Delete|Deregister|Put|Register|Update|Stop|Start)\w*$")
# The headers of a REST call that carry the request (not its signature).
KEPT_HEADERS = ("content-type", "accept")
KEPT_HEADER_PREFIX = "x-amzn-sagemaker-"
GENERATED = (
    (re.compile(r"\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{3}"), "<time>"),  # 2.x's async input names
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"[0-9a-f]{32}"), "<uuid>"),  # launch's async inputs (uuid4().hex)
    (re.compile(r"\d{6}-\d{6}-[0-9a-f]{4}"), "<stamp>"),  # launch.cloud.settings.unique_name
    (re.compile(r"\d{6}-\d{4}"), "<stamp>"),  # the SDK's short timestamps
)
# Spellings the API reads alike, written the one way: an optional list, map or structure
# sent empty is the same as one left out (2.x sends `IntegerParameterRanges: []`,
# `StaticHyperParameters: {}` and `Tags: []`; sagemaker-core leaves empty fields out), and
# `DisableProfiler: false` is the API's default (2.x sends it with the profiler's settings).
SAME_REQUEST = {"DisableProfiler": False}


def normalised(value: Any) -> Any:
    """The value with generated names replaced and `SAME_REQUEST` spellings dropped."""
    if isinstance(value, dict):
        kept = {}
        for key, raw in value.items():
            item = normalised(raw)
            if item in ({}, []) or (key in SAME_REQUEST and item == SAME_REQUEST[key]):
                continue
            kept[key] = item
        return kept
    if isinstance(value, list):
        return [normalised(item) for item in value]
    if isinstance(value, str):
        for pattern, placeholder in GENERATED:
            value = pattern.sub(placeholder, value)
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 2.x writes InitialVariantWeight 1, sagemaker-core 1.0
    return value


def sorted_collections(body: dict[str, Any]) -> dict[str, Any]:
    """Debugger's hook collections sorted by name: 2.x gathers them in a set, whose order
    changes from run to run."""
    hook = body.get("DebugHookConfig", {})
    if "CollectionConfigurations" in hook:
        hook["CollectionConfigurations"].sort(key=lambda collection: collection["CollectionName"])
    return body


def decoded_body(entry: dict[str, Any]) -> bytes:
    body = entry["body"] or ""
    return base64.b64decode(body) if entry["body_encoded"] else body.encode()


def rest_call(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A sagemaker-runtime invocation or an S3 write, as it was asked for."""
    path = entry["url"].split("://", 1)[-1].split("/", 1)[-1].split("?")[0]
    if entry["method"] not in ("POST", "PUT") or path.startswith("moto-api/"):
        return None
    headers = {
        name.lower(): value
        for name, value in entry["headers"].items()
        if name.lower() in KEPT_HEADERS or name.lower().startswith(KEPT_HEADER_PREFIX)
    }
    body = decoded_body(entry)
    try:
        content: Any = json.loads(body)
    except ValueError:
        content = f"{len(body)} bytes"
    return {"call": f"{entry['method']} /{path}", "headers": headers, "body": content}


def sent(recording: Path) -> list[dict[str, Any]]:
    """Every request of a moto recording (`MOTO_RECORDER_FILEPATH`) that changed something."""
    requests = []
    for line in recording.read_text().splitlines():
        entry = json.loads(line)
        target = entry["headers"].get("X-Amz-Target")
        if target:
            if CHANGES.search(target):
                body = json.loads(decoded_body(entry) or b"{}")
                requests.append({"call": target, "body": sorted_collections(body)})
        elif (call := rest_call(entry)) is not None:
            requests.append(call)
    return normalised(requests)  # type: ignore[no-any-return]


def count_fields(value: Any) -> int:
    """Every leaf value in the requests: what a comparison of them compares."""
    if isinstance(value, dict):
        return sum(count_fields(item) for item in value.values())
    if isinstance(value, list):
        return sum(count_fields(item) for item in value)
    return 1
