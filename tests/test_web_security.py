"""The web front-end against what another site, a DNS-rebinding page or a broken client can send: real HTTP
requests (http.client, and raw sockets where a client library would fix the request up) to the real server
on 127.0.0.1, with the terminal (stderr) and the log checked for tracebacks; and the page's final view in a
real headless Chromium."""
import http.client
import io
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import headless_chromium, needs_browser
from PIL import Image

from tts.search.frontends import ShownItem
from tts.search.frontends.web import WebFrontend

EVIL = "http://evil.example"


class Page:
    """A WebFrontend serving on a free loopback port, its rounds presented from a background thread."""

    def __init__(self, tmp_path: Path):
        self.tmp, self.run_dir = tmp_path, tmp_path / "run"
        self.run_dir.mkdir()
        self.front = WebFrontend(port=0)
        self.front.start()
        url = urlsplit(self.front.url)
        self.port = url.port
        self.session = parse_qs(url.query).get("session", [""])[0]
        self.choices: dict[int, object] = {}
        self.threads: dict[int, threading.Thread] = {}

    def show(self, round_: int, n: int = 3, size: int = 16, prompt: str = "a prompt") -> list[ShownItem]:
        """Present round ``round_`` of ``n`` images (distinct colours; random bytes when ``size`` is large)."""
        items = []
        for k in range(1, n + 1):
            path = self.run_dir / f"a_prompt_i@{round_}_{k - 1}.png"
            if size > 64:  # what is served is the file's bytes: a big file stands for a big picture
                path.write_bytes(os.urandom(size * size * 3))
            else:
                Image.new("RGB", (size, size), (60 * k % 256, 30 * round_ % 256, 200)).save(path)
            items.append(ShownItem(number=k, image=path, seed=k, score=0.1 * k, metric="m", explore=False))
        thread = threading.Thread(target=lambda: self.choices.setdefault(
            round_, self.front.present(round_, prompt, items, self.run_dir)), daemon=True)
        thread.start()
        self.threads[round_] = thread
        end = time.time() + 10
        while not (self.front._state.get("waiting") and self.front._state.get("round") == round_):
            assert time.time() < end, "the round never came on show"
            time.sleep(0.01)
        return items

    def token(self) -> str:
        return self.front._state["token"]

    def path(self, path: str, session: str | None = None) -> str:
        return f"{path}?session={self.session if session is None else session}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, parsed JSON or raw bytes) of one request through http.client."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        return r.status, (json.loads(data) if r.getheader("content-type") == "application/json" else data)

    def post(self, body, content_type="application/json", headers=None, session=None):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", self.path("/api/choice", session), raw,
                            {"Content-Type": content_type, **(headers or {})})

    def answer(self, **fields):
        return self.post({"token": self.token(), **fields})

    def raw(self, head: str, body: bytes = b"", half_close: bool = False) -> tuple[int, bytes]:
        """Send bytes as they are (``{port}`` and ``{session}`` filled in); the status and body of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(head.format(port=self.port, session=self.session).encode() + body)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]

    def waiting(self) -> bool:
        return bool(self.front._state.get("waiting"))

    def close(self) -> None:
        if hasattr(self.front, "close"):
            self.front.close()
        elif self.front._httpd is not None:
            self.front._httpd.shutdown()


@pytest.fixture
def page(tmp_path):
    p = Page(tmp_path)
    yield p
    p.close()


def no_traceback(capfd, caplog):
    err = capfd.readouterr().err
    for word in ("Traceback", "BrokenPipeError", "ConnectionResetError", "Exception occurred"):
        assert word not in err, err[-3000:]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_the_printed_url_carries_an_unguessable_session_token_required_everywhere(tmp_path, capfd):
    page = Page(tmp_path)
    try:
        printed = capfd.readouterr().err
        assert page.front.url in printed and "?session=" in page.front.url
        assert len(page.session) >= 40 and page.session != WebFrontend(port=0).session
        page.show(1)
        for path in ("/", "/api/state", "/img/1/1"):
            assert page.request("GET", page.path(path))[0] == 200, path
            for session in ("", "1", page.session[:-1] + ("A" if page.session[-1] != "A" else "B")):
                status, body = page.request("GET", page.path(path, session))
                assert status == 403 and "session" in body["error"], (path, session)
            assert page.request("GET", path)[0] == 403
        assert page.post({"token": page.token(), "action": "pick", "picks": [1]}, session="")[0] == 403
        assert page.waiting()
    finally:
        page.close()


def test_the_page_is_the_packaged_asset_file(page):
    """The page's HTML is a file of the package (tts/search/frontends/web_assets/page.html), served as it is."""
    from importlib.resources import files

    asset = files("tts.search.frontends").joinpath("web_assets/page.html").read_text(encoding="utf-8")
    assert asset.startswith("<!doctype html>") and "/api/choice" in asset and "\\u00b7" in asset  # JS escapes kept
    status, body = page.request("GET", page.path("/"))
    assert status == 200 and body.decode("utf-8") == asset


def test_another_site_cannot_answer(page, caplog):
    page.show(1)
    # the audit's attack: a text/plain "simple request" from another origin, with the round's token
    attack = json.dumps({"token": page.token(), "action": "pick", "picks": [1]}).encode()
    status, body = page.post(attack, content_type="text/plain", headers={"Origin": EVIL})
    assert status == 403 and "Origin" in body["error"]
    for origin in (EVIL, "null", f"http://evil.example:{page.port}", f"https://127.0.0.1:{page.port}",
                   f"http://127.0.0.1:{page.port + 1}"):
        status, _ = page.post({"token": page.token(), "action": "pick", "picks": [1]}, headers={"Origin": origin})
        assert status == 403, origin
    assert page.waiting() and 1 not in page.choices
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "evil.example" in warnings[0].getMessage()
    # the page's own origin (either loopback name) is accepted
    assert page.post({"token": page.token(), "action": "pick", "picks": [2, 1]},
                     headers={"Origin": f"http://localhost:{page.port}"})[0] == 200
    page.threads[1].join(5)
    assert page.choices[1].picks == [2, 1] and page.choices[1].action == "pick"


def test_a_dns_rebinding_host_is_refused(page):
    page.show(1)
    get = "GET /{what}?session={{session}} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    for host in ("evil.example:{port}", "evil.example", "127.0.0.1:1", "127.0.0.1.evil.example:{port}"):
        for what in ("api/state", "img/1/1", ""):
            status, body = page.raw(get.format(what=what, host=host))
            assert status == 403 and b"a prompt" not in body and b"PNG" not in body, (host, what)
    assert page.raw("GET /api/state?session={session} HTTP/1.0\r\n\r\n")[0] == 400  # no Host at all
    assert page.raw("GET /api/state?session={session} HTTP/1.1\r\nHost: localhost:{port}\r\nHost: evil.example\r\n"
                    "Connection: close\r\n\r\n")[0] == 400
    for host in ("127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"):
        status, body = page.raw(get.format(what="api/state", host=host))
        assert status == 200 and json.loads(body)["prompt"] == "a prompt"


def test_answers_must_be_application_json(page):
    page.show(1)
    body = json.dumps({"token": page.token(), "action": "pick", "picks": [1]}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/json; charset=latin-1"):
        status, answer = page.post(body, content_type=ctype)
        assert status == 415 and "error" in answer, ctype
    status, _ = page.raw("POST /api/choice?session={session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n", body)
    assert status == 415 and page.waiting()
    assert page.post(body, content_type="application/json; charset=utf-8")[0] == 200


def test_bodies_over_64_kib_are_refused_unread(page):
    page.show(1)
    big = json.dumps({"token": page.token(), "action": "pick", "picks": [1], "pad": "x" * 70_000}).encode()
    status, answer = page.post(big)
    assert status == 413 and "65536" in answer["error"]
    started = time.monotonic()  # a declared gigabyte is refused at once, not waited for
    status, _ = page.raw("POST /api/choice?session={session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n", b"{")
    assert status == 413 and time.monotonic() - started < 5 and page.waiting()


def test_malformed_bodies_get_400_and_no_traceback(page, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="tts.search.frontends.web")
    page.show(1)
    capfd.readouterr()
    for bad in (b"\xff\xfe{}", b'{"action": "pick", "picks": [1], "x": "\xc3"}', b"[" * 60_000, b'{"a":' * 12_000,
                b"[1]", b'"pick"', b"null", b"{not json", b"", b"1" * 5000):
        status, answer = page.post(bad)
        assert status == 400 and isinstance(answer["error"], str) and len(answer["error"]) < 120, bad[:20]
    head = "POST /api/choice?session={session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    body = b'{"token": "x", "action": "stop"}'
    for lengths, half_close in ((), False), (("abc",), False), (("-1",), False), (("1e3",), False), \
                               ((str(len(body)), "7"), False), ((str(len(body) + 50),), True):
        lines = "".join(f"Content-Length: {n}\r\n" for n in lengths)
        status, answer = page.raw(head + lines + "\r\n", body, half_close)
        assert status == 400 and json.loads(answer)["error"], lengths
    status, _ = page.raw(head + "Transfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n")
    assert status == 400 and page.waiting()
    no_traceback(capfd, caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_picks_are_distinct_numbers_in_range(page):
    page.show(1)
    for fields in ({"action": "pick", "picks": [True]}, {"action": "pick", "picks": [1.0]},
                   {"action": "pick", "picks": ["1"]}, {"action": "pick", "picks": [1, 1]},
                   {"action": "pick", "picks": [0]}, {"action": "pick", "picks": [4]},
                   {"action": "pick", "picks": "12"},
                   {"action": "pick", "picks": {"1": 1}}, {"action": "pick", "picks": [[1]]},
                   {"action": "pick", "picks": []}, {"action": "pick"}, {"action": "reject", "picks": [1]},
                   {"picks": [1]}, {"action": "x", "picks": [1]}, {"action": ["pick"], "picks": [1]}):
        status, answer = page.answer(**fields)
        assert status == 400 and answer["error"], fields
    for token in ("1", None, 1, page.token()[:-1]):
        assert page.post({"token": token, "action": "pick", "picks": [1]})[0] == 409, token
    assert page.waiting() and not page.choices
    assert page.answer(action="pick", picks=[3, 1])[0] == 200
    page.threads[1].join(5)
    assert page.choices[1].picks == [3, 1]
    assert page.answer(action="pick", picks=[2])[0] == 409  # answered once only


def test_after_stop_the_page_serves_the_favourite_and_the_run_folder(page):
    round1 = page.show(1)
    assert page.answer(action="pick", picks=[2, 1])[0] == 200
    page.show(2)
    assert page.answer(action="stop")[0] == 200
    page.threads[2].join(5)
    assert page.choices[2].stop and page.choices[2].picks == []
    assert page.request("GET", page.path("/img/best"))[0] == 404  # not before the session is over
    page.request("GET", page.path("/api/state"))  # a page is polling: finish() waits (briefly) for it
    finished = threading.Thread(target=page.front.finish)
    finished.start()
    time.sleep(0.2)
    status, state = page.request("GET", page.path("/api/state"))
    assert status == 200 and state["done"] and not state["waiting"]
    assert "round 1, candidate #2" in state["best"]["label"] and state["run_dir"] == str(page.run_dir.resolve())
    status, image = page.request("GET", page.path("/img/best"))
    assert status == 200 and image == round1[1].image.read_bytes()
    finished.join(1.0)
    assert not finished.is_alive()  # the final view was fetched: the process may exit now
    assert page.request("GET", page.path("/img/best", ""))[0] == 403


def test_finish_shows_the_strategys_favourite_when_given(page, tmp_path):
    best = tmp_path / "best.png"
    Image.new("RGB", (8, 8), "red").save(best)
    page.front.finish(best_image=best, run_dir=tmp_path)
    state = page.request("GET", page.path("/api/state"))[1]
    assert state["done"] and state["best"]["label"] == "best.png" and state["run_dir"] == str(tmp_path.resolve())
    assert page.request("GET", page.path("/img/best"))[1] == best.read_bytes()


def test_a_new_prompt_starts_without_a_favourite(page):
    page.show(1)
    assert page.answer(action="pick", picks=[1])[0] == 200
    page.threads[1].join(5)
    page.show(2, prompt="another prompt")
    assert page.answer(action="stop")[0] == 200
    page.threads[2].join(5)
    page.front.finish()
    state = page.request("GET", page.path("/api/state"))[1]
    assert state["done"] and state["best"] is None and page.request("GET", page.path("/img/best"))[0] == 404


def test_a_browser_closing_mid_download_prints_no_traceback(page, capfd, caplog):
    page.show(1, n=2, size=2048)  # 12 MB a picture: more than the socket buffers hold
    capfd.readouterr()
    for k in range(18):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect(("127.0.0.1", page.port))
            s.sendall(f"GET /img/1/{k % 2 + 1}?session={page.session} HTTP/1.1\r\nHost: 127.0.0.1:{page.port}\r\n"
                      "\r\n".encode())
            assert s.recv(100).startswith(b"HTTP/1.0 200")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
    time.sleep(1.0)
    assert page.request("GET", page.path("/api/state"))[0] == 200  # still serving
    no_traceback(capfd, caplog)


@pytest.mark.slow
@needs_browser
@pytest.mark.parametrize("told", [True, False], ids=["finished", "killed"])
def test_the_final_view_outlives_tts_search_in_chromium(page, capfd, caplog, told):
    """Told the session is over, the page shows the favourite from the server; gone without a word (killed, or
    exited before the page's next poll), the page shows the favourite it remembers; either way with the run folder."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium()
    try:
        round1 = page.show(1)
        driver.get(page.front.url)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.ID, "candidate-3"))
        driver.find_element(By.ID, "candidate-2").click()
        driver.find_element(By.ID, "submit").click()
        page.threads[1].join(10)
        assert page.choices[1].picks == [2]
        page.show(2)
        wait.until(lambda d: "round 2" in d.find_element(By.ID, "prompt").text)
        driver.find_element(By.ID, "stop").click()
        page.threads[2].join(10)
        if told:
            page.front.finish()
        page.close()  # tts-search exits
        wait.until(lambda d: "exited" in d.find_element(By.ID, "status").text)
        assert "round 1, candidate #2" in driver.find_element(By.ID, "best-label").text
        assert driver.find_element(By.ID, "run-dir").text == str(page.run_dir.resolve())
        best = driver.find_element(By.CSS_SELECTOR, "#best img")
        assert driver.execute_script("return arguments[0].naturalWidth", best) == 16
        png = driver.execute_script("const c = document.createElement('canvas'); c.width = c.height = 16;"
                                    "c.getContext('2d').drawImage(arguments[0], 0, 0);"
                                    "return Array.from(c.getContext('2d').getImageData(0, 0, 1, 1).data);", best)
        assert tuple(png[:3]) == Image.open(io.BytesIO(round1[1].image.read_bytes())).getpixel((0, 0))
    finally:
        driver.quit()
    no_traceback(capfd, caplog)
