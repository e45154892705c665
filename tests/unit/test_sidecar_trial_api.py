"""The sidecar's HTTPS client: the requests it sends, the errors it reports, the kubeconfigs it reads.

A local TLS server with a certificate made here stands in for the API
server's two endpoints; the integration tier runs the same client against a
real kube-apiserver (every sidecar the node double starts uses it).
"""

import base64
import json
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from hpo_operator.sidecar import trial_api
from hpo_operator.sidecar.reporter import _transient

TRIAL_PATH = "/apis/hpo.dev/v1alpha1/namespaces/ns1/hpotrials/exp-0001"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class FakeApiServer:
    """Answers GET of the trial and PATCH of its status; records what it was sent."""

    def __init__(self, certificate):
        self.requests = []
        self.answers = []  # (status, body) to give next, else 200 with the trial
        self.status = {"observations": []}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the API server

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append((self.command, self.path, dict(self.headers), body))
                status, payload = server.answers.pop(0) if server.answers else (200, {"status": server.status})
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_PATCH = _answer

            def log_message(self, *args):
                pass

        cert, key = certificate
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(certificate):
    s = FakeApiServer(certificate)
    yield s
    s.stop()


def api_for(server, certificate, tmp_path, token="first-token"):
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    tls = ssl.create_default_context(cafile=str(certificate[0]))
    endpoint = trial_api.Endpoint("127.0.0.1", server.port, tls, token_file=token_file)
    return trial_api.TrialApi(endpoint, "ns1", "exp-0001"), token_file


def test_reads_the_trial_and_json_patches_its_status_with_the_current_token(server, certificate, tmp_path):
    api, token_file = api_for(server, certificate, tmp_path)
    server.status = {"observations": [{"epoch": 1, "value": 0.5}]}
    assert api.read_status() == {"observations": [{"epoch": 1, "value": 0.5}]}
    token_file.write_text("rotated-token")  # the kubelet rotates a projected token in place
    patch = [{"op": "add", "path": "/status/observations/-", "value": {"epoch": 2, "value": 0.4}}]
    api.append(patch)
    (get_method, get_path, get_headers, _), (method, path, headers, body) = server.requests
    assert (get_method, get_path, get_headers["Authorization"]) == ("GET", TRIAL_PATH, "Bearer first-token")
    assert (method, path) == ("PATCH", TRIAL_PATH + "/status")
    assert headers["Content-Type"] == "application/json-patch+json" and headers["Authorization"] == "Bearer rotated-token"
    assert json.loads(body) == patch
    api.close()


@pytest.mark.parametrize("status", [404, 409, 422, 500])
def test_an_error_answer_carries_its_status_as_the_kubernetes_client_does(server, certificate, tmp_path, status):
    api, _ = api_for(server, certificate, tmp_path)
    server.answers.append((status, {"kind": "Status", "message": "the test says no"}))
    with pytest.raises(trial_api.ApiError) as caught:
        api.read_status()
    assert caught.value.status == status and "the test says no" in str(caught.value)
    assert _transient(caught.value) == (status != 422)


def test_no_answer_is_a_transient_error_without_status(certificate, tmp_path):
    tls = ssl.create_default_context(cafile=str(certificate[0]))
    api = trial_api.TrialApi(trial_api.Endpoint("127.0.0.1", 1, tls, token="t"), "ns1", "exp-0001", timeout=5)
    with pytest.raises(trial_api.ApiError) as caught:
        api.read_status()
    assert caught.value.status is None and _transient(caught.value)


def test_a_server_that_is_not_the_cluster_is_refused(server, tmp_path):
    endpoint = trial_api.Endpoint("127.0.0.1", server.port, ssl.create_default_context(), token="t")
    with pytest.raises(trial_api.ApiError, match="CERTIFICATE_VERIFY_FAILED"):
        trial_api.TrialApi(endpoint, "ns1", "exp-0001").read_status()
    assert server.requests == []  # the token never left


def test_a_kept_alive_connection_the_server_dropped_is_opened_again(server, certificate, tmp_path):
    api, _ = api_for(server, certificate, tmp_path)
    api.read_status()
    api._conn.sock.close()  # as an API server closing an idle connection
    api._conn.sock = None
    server_side_closed = api._conn
    server_side_closed.auto_open = 0  # http.client would reopen silently; make it fail as a dead socket does
    assert api.read_status() == {"observations": []}
    assert len(server.requests) == 2


def write_kubeconfig(path, cluster, user):
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "contexts": [{"name": "other", "context": {"cluster": "x", "user": "x"}},
                     {"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": cluster}], "users": [{"name": "u", "user": user}]}))
    return path


def test_a_token_kubeconfig_is_read_without_the_kubernetes_package(server, certificate, tmp_path):
    ca = certificate[0]
    cfg = write_kubeconfig(tmp_path / "kubeconfig", {"server": f"https://127.0.0.1:{server.port}",
                                                    "certificate-authority": ca.name}, {"token": "abc"})
    (tmp_path / ca.name).write_bytes(ca.read_bytes())  # a relative path is relative to the kubeconfig
    endpoint = trial_api.kubeconfig_endpoint(cfg)
    assert (endpoint.host, endpoint.port, endpoint.bearer()) == ("127.0.0.1", server.port, "Bearer abc")
    trial_api.TrialApi(endpoint, "ns1", "exp-0001").read_status()
    data = write_kubeconfig(tmp_path / "inline", {"server": f"https://127.0.0.1:{server.port}",
                                                 "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()},
                            {"tokenFile": str(tmp_path / "tok")})
    (tmp_path / "tok").write_text("from-file")
    endpoint = trial_api.kubeconfig_endpoint(data)
    assert endpoint.bearer() == "Bearer from-file"
    trial_api.TrialApi(endpoint, "ns1", "exp-0001").read_status()
    assert [h["Authorization"] for _, _, h, _ in server.requests] == ["Bearer abc", "Bearer from-file"]


def test_other_kubeconfigs_are_left_to_the_kubernetes_package(tmp_path):
    cert_user = write_kubeconfig(tmp_path / "a", {"server": "https://10.0.0.1:6443"},
                                 {"client-certificate": "c.crt", "client-key": "c.key"})
    assert trial_api.kubeconfig_endpoint(cert_user) is None
    plain_http = write_kubeconfig(tmp_path / "b", {"server": "http://10.0.0.1:8080"}, {"token": "t"})
    assert trial_api.kubeconfig_endpoint(plain_http) is None


def test_in_a_pod_the_service_and_the_projected_token_are_used(tmp_path, monkeypatch, certificate):
    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "ca.crt").write_bytes(certificate[0].read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.223.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    endpoint = trial_api.in_pod_endpoint(tmp_path)
    assert (endpoint.host, endpoint.port, endpoint.bearer()) == ("10.223.0.1", 443, "Bearer pod-token")
    assert endpoint.tls.verify_mode == ssl.CERT_REQUIRED
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert trial_api.in_pod_endpoint(tmp_path) is None


def test_the_sidecar_starts_without_importing_kubernetes():
    code = ("import sys, hpo_operator.sidecar.__main__; "
            "print(sorted(m for m in ('kubernetes', 'yaml', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_in_a_pod_without_the_cluster_ca_the_server_is_verified_not_trusted_blindly(
        tmp_path, monkeypatch, server):
    # The projected volume lost its ca.crt: the sidecar must not hand its token to a server it cannot verify.
    (tmp_path / "token").write_text("pod-token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
    endpoint = trial_api.in_pod_endpoint(tmp_path)
    assert endpoint.tls.verify_mode == ssl.CERT_REQUIRED and endpoint.tls.check_hostname
    with pytest.raises(trial_api.ApiError, match="CERTIFICATE_VERIFY_FAILED"):
        trial_api.TrialApi(endpoint, "ns1", "exp-0001").read_status()
    assert not server.requests  # nothing, the token included, reached the unverified server
