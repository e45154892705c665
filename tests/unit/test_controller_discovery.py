"""The operator waits at start until the API server serves what it watches, read as kopf discovers it.

A restarted API server serves ``/apis/hpo.dev/v1alpha1`` a moment before its group list (``/apis``) names
the group. kopf reads the group list and scans once: started in that moment, it never watched the
experiments (a CI run's operator created no trial after an API server outage). The moment cannot be
produced on demand from the real API server, so a TEST DOUBLE serves the discovery documents here;
``tests/integration/test_kube_calls.py`` asks the real one.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from hpo_operator.controller.kube import KubeApi
from hpo_operator.resources import EXPERIMENT_PLURAL, GROUP, TRIAL_PLURAL, VERSION

CORE = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [{"name": "pods"}]}
OURS = {"kind": "APIResourceList", "groupVersion": f"{GROUP}/{VERSION}",
        "resources": [{"name": EXPERIMENT_PLURAL}, {"name": TRIAL_PLURAL}]}
GROUP_LISTED = {"name": GROUP, "versions": [{"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}],
                "preferredVersion": {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}}


def discovery_double(documents: dict[str, dict]):
    """An HTTP server answering GETs of these paths with these documents, 404 otherwise (TEST DOUBLE of the
    API server's discovery endpoints)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.rstrip("/")
            body = json.dumps(documents[path]).encode() if path in documents else b"{}"
            self.send_response(200 if path in documents else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def serve():
    servers = []

    def start(documents: dict[str, dict]) -> KubeApi:
        servers.append(discovery_double(documents))
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{servers[-1].server_port}"
        return KubeApi(client.ApiClient(configuration))

    yield start
    for server in servers:
        server.shutdown()


def test_everything_served_and_listed_is_served(serve):
    api = serve({"/api/v1": CORE, "/apis": {"kind": "APIGroupList", "groups": [GROUP_LISTED]},
                 f"/apis/{GROUP}/{VERSION}": OURS})
    assert api.unserved_resources() == []


def test_a_version_served_before_the_group_list_names_it_is_not_served_yet(serve):
    api = serve({"/api/v1": CORE, "/apis": {"kind": "APIGroupList", "groups": []},
                 f"/apis/{GROUP}/{VERSION}": OURS})
    assert api.unserved_resources() == [EXPERIMENT_PLURAL, TRIAL_PLURAL]


def test_a_group_listed_without_this_version_is_not_served(serve):
    other = {**GROUP_LISTED, "versions": [{"groupVersion": f"{GROUP}/v9", "version": "v9"}]}
    api = serve({"/api/v1": CORE, "/apis": {"kind": "APIGroupList", "groups": [other]},
                 f"/apis/{GROUP}/{VERSION}": OURS})
    assert api.unserved_resources() == [EXPERIMENT_PLURAL, TRIAL_PLURAL]


def test_an_api_server_not_answering_serves_nothing():
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # the discard port: nothing listens
    assert KubeApi(client.ApiClient(configuration)).unserved_resources() == ["pods", EXPERIMENT_PLURAL, TRIAL_PLURAL]
