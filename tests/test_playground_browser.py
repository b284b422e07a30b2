"""The playground page in a real headless Chromium (Debian's ``chromium``, driven by Playwright, never a
downloaded browser) against the running Serve app: load each example, click Rank, read the ranking
from the DOM and compare it with what ``POST /v1/rerank`` answers for the same body.

Any page error, console error or request to another origin fails the test (expected HTTP errors are
named where they are provoked). Waits are on DOM conditions with generous limits, never sleeps.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 120_000
EXAMPLES = ["ecommerce", "moderation", "code", "crosslingual"]


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the playground test drives Debian's chromium; "
        "install it with deploy/local/tools.sh ensure-chromium (make test and make install run it)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, timeout=WAIT_MS)
        yield launched
        launched.close()


class Playground:
    """One page of the playground, with everything that went wrong on it collected."""

    def __init__(self, browser, url: str):
        self.url = url
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.problems: list[str] = []
        self.foreign: list[str] = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("console", self._console)
        self.page.route("**/*", self._own_origin_only)
        self.runs = 0

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text} ({msg.location.get('url', '')})")

    def _own_origin_only(self, route) -> None:
        if route.request.url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def open(self) -> None:
        response = self.page.goto(self.url, wait_until="load")
        assert response is not None and response.status == 200, f"GET {self.url}: {response and response.status}"
        assert "default-src 'none'" in response.headers.get("content-security-policy", "")
        self.page.wait_for_function(
            "() => document.getElementById('model-name').textContent !== '…'"
        )  # the model line is filled in

    def rank(self) -> tuple[dict, dict]:
        """Click Rank and wait for the page to finish; the body the page sent and the API's answer."""
        with self.page.expect_response(lambda r: r.url.endswith("/v1/rerank")) as answer:
            self.page.click("#rank")
        self.runs += 1
        self.page.wait_for_function("n => document.getElementById('results').dataset.run === n", arg=str(self.runs))
        response = answer.value
        return response.request.post_data_json, {"status": response.status}

    def ranking(self) -> list[dict]:
        return self.page.eval_on_selector_all(
            "#results li",
            """items => items.map(li => ({
                index: Number(li.dataset.index), score: Number(li.dataset.score),
                text: li.querySelector('.doc').lastChild.textContent,
                flagged: li.classList.contains('flagged'),
                bar: li.querySelector('.fill').style.width,
            }))""",
        )

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def expect_clean(self, *, allowed: tuple[str, ...] = ()) -> None:
        """No page error, no console error except the ``allowed`` patterns, no request elsewhere."""
        unexpected = [p for p in self.problems if not any(re.search(a, p) for a in allowed)]
        assert not unexpected, "\n".join(unexpected)
        assert not self.foreign, f"the page requested other origins: {self.foreign}"
        self.problems.clear()

    def close(self) -> None:
        self.context.close()


def _form_body(page) -> dict:
    """The Cohere body the form describes (what the page must send)."""
    lines = page.input_value("#documents").splitlines()
    body: dict = {"query": page.input_value("#query").strip(), "return_documents": True}
    body["documents"] = [line.strip() for line in lines if line.strip()]
    if page.input_value("#top-n").strip():
        body["top_n"] = int(page.input_value("#top-n"))
    if page.input_value("#instruction").strip():
        body["instruction"] = page.input_value("#instruction").strip()
    return body


def _check_example(pg: Playground, http: httpx.Client, name: str, shots: Path) -> list[dict]:
    pg.page.click(f"#example-{name}")
    pg.page.wait_for_function("() => document.getElementById('documents').value !== ''")
    sent, answer = pg.rank()
    assert answer["status"] == 200, pg.text("#error")
    assert sent == _form_body(pg.page)

    api = http.post("/v1/rerank", json=sent)
    assert api.status_code == 200, api.text
    want = api.json()["results"]
    shown = pg.ranking()
    assert [x["index"] for x in shown] == [x["index"] for x in want], f"{name}: page and API disagree"
    for item, expected in zip(shown, want):
        assert item["score"] == pytest.approx(expected["relevance_score"], abs=1e-6)
        assert item["text"] == sent["documents"][item["index"]]
        width = float(item["bar"].removesuffix("%"))
        assert width == pytest.approx(max(0.0, min(1.0, expected["relevance_score"])) * 100, abs=0.05)
    assert len(shown) == min(sent.get("top_n", len(sent["documents"])), len(sent["documents"]))

    threshold = pg.page.input_value("#threshold").strip()
    flagged = [x["index"] for x in shown if x["flagged"]]
    if threshold:
        assert flagged == [x["index"] for x in want if x["relevance_score"] > float(threshold)]
        assert f"{len(flagged)} flagged above" in pg.text("#summary")
    else:
        assert flagged == []
    summary = pg.text("#summary")
    assert api.json()["model"] in summary and re.search(r"\d+ ms", summary), summary
    assert pg.page.is_hidden("#error")
    pg.page.screenshot(path=str(shots / f"playground-{name}.png"), full_page=True)
    return shown


def test_playground_ranks_like_the_api_in_chromium(browser, serve_stack, tmp_path):
    pg = Playground(browser, serve_stack.base_url + "/")
    with httpx.Client(base_url=serve_stack.base_url, timeout=120) as http:
        try:
            pg.open()
            assert pg.page.is_hidden("#fallback-banner")
            assert pg.page.is_hidden("#key-row")  # no keys on this app
            for name in EXAMPLES:
                _check_example(pg, http, name, tmp_path)
            pg.expect_clean()

            # Ranked once by the page and once by the test: the second click is all from the cache.
            _, answer = pg.rank()
            n = len(_form_body(pg.page)["documents"])
            assert f"{n} of {n} from cache" in pg.text("#summary") or pg.page.locator(".badge.cached").count() == n

            # An API error is shown on the page with its reason and setting, not swallowed.
            too_many = serve_stack.settings.limits.max_documents + 1
            pg.page.fill("#documents", "\n".join(f"candidate {i}" for i in range(too_many)))
            _, answer = pg.rank()
            assert answer["status"] == 413
            error = pg.text("#error")
            assert "HTTP 413" in error and "limits.max_documents" in error, error
            assert pg.page.locator("#results li").count() == 0
            pg.expect_clean(allowed=(r"status of 413",))

            # Bad input is refused on the page before any request.
            pg.page.fill("#query", "   ")
            pg.page.click("#rank")
            pg.runs += 1
            pg.page.wait_for_function("n => document.getElementById('results').dataset.run === n", arg=str(pg.runs))
            assert "Type a query" in pg.text("#error")
            pg.expect_clean()
        finally:
            pg.close()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"playground-{n}.png" for n in EXAMPLES)


def test_playground_with_api_keys_and_the_fallback_model_under_a_route_prefix(browser, extra_app, tmp_path):
    """Keys on and the packaged MiniLM fallback, served at /<name> (no trailing slash: the page finds its API).

    The page opens without a key, asks for one when the API answers 401 (shown, not swallowed), and
    with the key shows the FALLBACK banner and ranks like the API.
    """
    from serve_app.engine.loader import minilm_dir

    key = "playground-key-2"
    app = extra_app("playground-keys", model_dir=minilm_dir(), api_keys=f"playground-key-1,{key}")
    refused = (r"status of 401",)
    pg = Playground(browser, app.base_url)
    with httpx.Client(base_url=app.base_url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
        try:
            pg.open()
            pg.page.wait_for_selector("#key-row", state="visible")
            assert pg.page.is_hidden("#fallback-banner")  # the model is not known without a key

            pg.page.click("#example-crosslingual")
            _, answer = pg.rank()
            assert answer["status"] == 401
            assert "HTTP 401" in pg.text("#error") and "API key" in pg.text("#error")
            pg.expect_clean(allowed=refused)

            pg.page.fill("#api-key", key)
            pg.page.press("#api-key", "Tab")  # change: the page asks /info again, with the key
            pg.page.wait_for_selector("#fallback-banner", state="visible")
            banner = pg.text("#fallback-banner")
            assert "FALLBACK MODEL" in banner and "RERANK_MODEL" in banner, banner
            info = http.get("/info").json()
            assert info["fallback"] is True and info["model"] in pg.text("#model-name")
            _check_example(pg, http, "crosslingual", tmp_path)
            pg.expect_clean()
        finally:
            pg.close()
