"""A local HTTP server that answers the Kubernetes API calls a campaign makes, and keeps every request. The real
`kubernetes` client talks to it through a kubeconfig, as it would to a cluster.

The Job and Pod objects it returns (tests/unit/data/k8s_api/*.json) are written in the API server's JSON shape
(`kubectl get -o json`), with the conditions, reasons and messages Kubernetes 1.3x sets for each case (backoff
limit, pod failure policy, Unschedulable, DisruptionTarget on a node shutdown); they were not captured from a live
cluster (docs/benchmark.md#what-only-a-real-cluster-shows)."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

RECORDED = Path(__file__).with_name("data") / "k8s_api"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / f"{name}.json").read_text())


class FakeApi:
    """`objects`: what GETs return, keyed by API path; POSTs create (201, or 409 when the path is already there),
    PUT replaces, DELETE removes. `refuse`: answer every call with this status (401: bad credentials)."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.logs: dict[str, str] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.refuse: int | None = None

    def add(self, path: str, body: Any) -> None:
        self.objects[path] = body

    def posted(self, kind_path: str) -> list[dict]:
        return [body for method, path, body in self.requests if method == "POST" and path == kind_path]


def _collection_item_path(path: str, body: dict) -> str:
    return f"{path}/{body['metadata']['name']}"


def _handler(api: FakeApi):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: Any) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                              "reason": reason, "code": code})

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            api.requests.append(("GET", self.path, None))
            if api.refuse:
                return self._status(api.refuse, "Unauthorized", "Unauthorized")
            if url.path.endswith("/log"):
                return self._send(200, api.logs.get(url.path, ""))
            if url.path in api.objects:
                return self._send(200, api.objects[url.path])
            query = parse_qs(url.query)
            if "labelSelector" in query and url.path.endswith("/pods"):
                job = query["labelSelector"][0].split("=", 1)[1]
                items = api.objects.get(f"{url.path}?job={job}", [])
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
            if re.search(r"/jobs$", url.path):
                return self._send(200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": []})
            name = url.path.rsplit("/", 1)[-1]
            return self._status(404, "NotFound", f'"{name}" not found')

        def do_POST(self) -> None:
            body = self._body()
            path = urlsplit(self.path).path
            api.requests.append(("POST", path, body))
            if api.refuse:
                return self._status(api.refuse, "Unauthorized", "Unauthorized")
            item = _collection_item_path(path, body)
            if item in api.objects:
                return self._status(409, "AlreadyExists", f'{body["kind"]} "{body["metadata"]["name"]}" already '
                                    "exists")
            created = {**body, "metadata": {**body["metadata"], "uid": str(uuid.uuid4())}}
            api.objects[item] = created
            return self._send(201, created)

        def do_PUT(self) -> None:
            body = self._body()
            path = urlsplit(self.path).path
            api.requests.append(("PUT", path, body))
            api.objects[path] = body
            return self._send(200, body)

        def do_DELETE(self) -> None:
            path = urlsplit(self.path).path
            api.requests.append(("DELETE", path, self._body()))
            if api.objects.pop(path, None) is None:
                return self._status(404, "NotFound", "not found")
            return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        def log_message(self, *args: object) -> None:
            return None

    return Handler


@contextmanager
def serve(tmp_path: Path) -> Iterator[tuple[FakeApi, Path]]:
    """(the fake API, a kubeconfig whose current context points at it)."""
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "bench", "user": {"token": "test-token"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
    }))
    try:
        yield api, kubeconfig
    finally:
        server.shutdown()
        server.server_close()
