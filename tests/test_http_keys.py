"""API keys (``serve.api_keys`` = ``RERANK_API_KEYS``) on a running app under a route prefix.

The app reads its keys from a file and has ``serve.metrics_require_key`` on; the comma form and the
default (``/metrics`` open) are checked on the settings and the gate directly. Clients: httpx and the
real ``cohere`` SDK (which sends its api_key as ``Authorization: Bearer``). Hypothesis sends arbitrary
Authorization values: 401 or 200, never a 5xx.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cohere
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.settings import ConfigError, Settings, load_settings
from serve_app.http.auth import ApiKeys
from tests.fixtures_serve import ServeStack, serve_settings

KEYS = ["alpha-key-1", "beta.key~2/+="]
DOCS = ["bananas are yellow", "the sky is blue"]
GUARDED = [
    ("POST", "/v1/rerank", {"query": "q", "documents": DOCS}),
    ("POST", "/v2/rerank", {"query": "q", "documents": DOCS}),
    ("POST", "/rerank", {"query": "q", "texts": DOCS}),
    ("POST", "/score", {"text_1": "q", "text_2": DOCS}),
    ("GET", "/v1/models", None),
    ("GET", "/info", None),
]
OPEN = ["/healthz", "/readyz", "/playground", "/", "/docs", "/openapi.json"]


@pytest.fixture(scope="module")
def keyed(serve_stack, tiny_qwen_dir, redis_url, tmp_path_factory) -> ServeStack:
    """One keyed app for the module (extra_app is per test, and an app costs seconds to start and stop)."""
    from serve_app import runtime

    key_file = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    key_file.write_text(f"# rotated 2026-11\n{KEYS[0]}\n\n  {KEYS[1]}  \n")
    port = serve_stack.settings.serve.http_port
    s = serve_settings(
        tiny_qwen_dir, redis_url, "keyed", "/keyed", port, api_keys=str(key_file), metrics_require_key=True
    )
    started = runtime.start(s)
    yield ServeStack(s, f"{serve_stack.base_url}/keyed")
    runtime.stop(started)


def _call(base: str, method: str, path: str, body, key: str | None = None, **headers) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, f"{base}{path}", json=body, headers=headers, timeout=60)


def _assert_401(r: httpx.Response, *secrets: str) -> dict:
    assert r.status_code == 401, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"], body
    assert r.headers["www-authenticate"].startswith("Bearer")
    for secret in secrets:
        assert secret not in r.text and secret not in str(r.headers)
    return body


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
def test_guarded_routes_need_a_key(keyed, method, path, body):
    base = keyed.base_url
    assert "missing" in _assert_401(_call(base, method, path, body))["error"]
    assert "not accepted" in _assert_401(_call(base, method, path, body, "wrong-key"), "wrong-key")["error"]
    assert "malformed" in _assert_401(_call(base, method, path, body, Authorization=f"Basic {KEYS[0]}"))["error"]
    for key in KEYS:
        r = _call(base, method, path, body, key)
        assert r.status_code == 200, r.text


def test_open_routes(keyed):
    for path in OPEN:
        r = httpx.get(f"{keyed.base_url}{path}", timeout=60)
        assert r.status_code == 200, (path, r.text)
    unknown = _call(keyed.base_url, "GET", "/nope", None)  # 401 first: a stranger learns nothing about routes
    _assert_401(unknown)
    assert _call(keyed.base_url, "GET", "/nope", None, KEYS[0]).status_code == 404


def test_key_file_lines_and_metrics_that_need_a_key(keyed):
    base = keyed.base_url
    _assert_401(_call(base, "GET", "/metrics", None))
    assert _call(base, "GET", "/metrics", None, KEYS[1]).status_code == 200  # a line with spaces around it
    _assert_401(_call(base, "GET", "/info", None, "# rotated 2026-11"))  # comments are not keys


def test_metrics_are_open_by_default_and_nothing_is_guarded_without_keys():
    assert not ApiKeys(KEYS).guards("/metrics") and ApiKeys(KEYS, protect_metrics=True).guards("/metrics")
    assert ApiKeys(KEYS).guards("/score") and ApiKeys(KEYS).guards("/anything-added-later")
    assert not any(ApiKeys(KEYS).guards(p) for p in OPEN)
    assert not ApiKeys(None, protect_metrics=True).guards("/v1/rerank")


def test_cohere_sdk_with_and_without_the_key(keyed):
    good = cohere.ClientV2(base_url=keyed.base_url, api_key=KEYS[1])
    model = httpx.get(f"{keyed.base_url}/v1/models", headers={"Authorization": f"Bearer {KEYS[1]}"}).json()
    got = good.rerank(model=model["data"][0]["id"], query="which is yellow", documents=DOCS)
    assert len(got.results) == 2
    assert len(cohere.Client(base_url=keyed.base_url, api_key=KEYS[0]).rerank(query="q", documents=DOCS).results) == 2
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(base_url=keyed.base_url, api_key="nope").rerank(model="m", query="q", documents=DOCS)


def test_401_is_counted_before_the_body_is_read(keyed):
    """No key: 401, not 415 / 413 / 400 about a body the gate never read."""
    for content, ctype in ((b"{not json", "application/json"), (b"x" * 5_000_000, "text/plain")):
        r = httpx.post(f"{keyed.base_url}/v1/rerank", content=content, headers={"content-type": ctype}, timeout=60)
        _assert_401(r)
    r = _call(keyed.base_url, "POST", "/v1/rerank", {"query": "q"}, "wrong", **{"X-Request-Id": "auth-1"})
    _assert_401(r)
    assert r.headers["x-request-id"] == "auth-1"


def test_keys_are_in_no_log_and_no_repr(keyed):
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    secrets = KEYS
    leaked = []
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            text = path.read_bytes()
            leaked += [f"{path.name}: key {i}" for i, s in enumerate(secrets) if s.encode() in text]
    assert not leaked, leaked
    s = keyed.settings
    for shown in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert not any(k in shown for k in KEYS)


# -- the settings and the key check alone --------------------------------------------------------------


def test_settings_forms_and_errors(tmp_path):
    assert load_settings(environ={"RERANK_API_KEYS": " a1 , b2 ,"}).serve.api_key_list() == ["a1", "b2"]
    assert load_settings(environ={}).serve.api_key_list() is None
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    for bad, why in (
        (str(tmp_path / "missing.txt"), "missing"),
        (str(empty), "no API key"),
        (str(tmp_path), "not a regular file"),
        ("ok,has space", "key 2 is not a bearer token"),
        ("ключ", "key 1 is not a bearer token"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={"RERANK_API_KEYS": bad})
        (line,) = caught.value.problems
        assert line.startswith("serve.api_keys (RERANK_API_KEYS) = '***': ") and why in line, line
        assert bad not in line  # neither a key nor the file's path is echoed


def test_a_masked_copy_lets_nobody_in():
    """A worker's copy (dumped without REVEAL_SECRETS) keeps keys on but matches no key, not even the mask."""
    s = Settings.model_validate({"serve": {"api_keys": "k1"}})
    copy = Settings.model_validate_json(s.model_dump_json())
    keys = ApiKeys.from_settings(copy.serve)
    assert keys.enabled and keys.guards("/info")
    assert keys.refusal(b"Bearer **********") and keys.refusal(b"Bearer k1")


HEADER_BYTES = st.binary(max_size=80).map(
    lambda b: bytes(c for c in b if c in range(0x20, 0x7F) or c >= 0x80 or c == 9)
)


def _expected_ok(value: bytes) -> bool:
    scheme, _, token = value.strip().partition(b" ")
    return scheme.lower() == b"bearer" and token.strip().decode("latin-1") in KEYS


AUTH_VALUES = st.one_of(
    HEADER_BYTES,
    st.builds(
        lambda k, pre, post: pre + b"Bearer " + k.encode() + post,
        st.sampled_from(KEYS),
        st.sampled_from([b"", b" ", b"\t"]),
        st.sampled_from([b"", b" ", b"x", b"\t"]),
    ),
    st.builds(
        lambda k, scheme: scheme + b" " + k.encode(),
        st.sampled_from(KEYS),
        st.sampled_from([b"bearer", b"BEARER", b"Bearer  ", b"Token", b"Bearer\t"]),
    ),
)


@settings(max_examples=2000, deadline=None, database=None)
@given(value=AUTH_VALUES)
def test_key_check_is_total_and_exact(value):
    keys = ApiKeys(KEYS)
    assert (keys.refusal(value) is None) == _expected_ok(value)


@settings(max_examples=80, deadline=None, database=None)
@given(value=AUTH_VALUES)
def test_any_authorization_header_is_401_or_200(keyed, value):
    value = value.strip(b" \t")  # h11 refuses to send a value with surrounding whitespace
    try:
        r = httpx.get(f"{keyed.base_url}/info", headers=[(b"Authorization", value)], timeout=60)
    except httpx.LocalProtocolError:  # the client itself refuses such a value: nothing was sent
        return
    assert r.status_code == (200 if _expected_ok(value) else 401), (value, r.status_code, r.text[:200])
    if r.status_code == 401:
        _assert_401(r, *KEYS)


def test_digests_only():
    """Nothing of a key but its SHA-256 is kept by the gate."""
    keys = ApiKeys(KEYS)
    assert keys._digests == [hashlib.sha256(k.encode()).digest() for k in KEYS]
    assert not any(k in repr(vars(keys)) for k in KEYS)
