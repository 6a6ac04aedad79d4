"""The web front-end: a small page on 127.0.0.1 (port configurable) showing the round's candidates. Click
(or press 1-9) to pick, in order of preference; Enter submits, r rejects all, q stops; a Stop button too.
When the session ends the page shows the favourite and the run folder, and keeps showing them after
tts-search exits.

Only whoever holds the printed URL can drive the page: it carries an unguessable session token
(``?session=...``, from :func:`secrets.token_urlsafe`) that every request must carry, compared in constant
time; the Host header must name the bound address (DNS rebinding), a request's Origin, when sent, must be
the page's own (cross-site requests, OWASP CSRF Prevention Cheat Sheet), and answers are ``POST`` bodies
of ``application/json`` (a type another site's form or ``text/plain`` fetch cannot send without a
CORS preflight, which this server never grants), at most 64 KiB. Anything else gets a short JSON error
and a 4xx status, logged at DEBUG (a foreign Host or Origin: one WARNING line); a browser closing its
connection mid-answer is not an error. The page polls ``/api/state``; ``POST /api/choice`` answers;
images are served only for the round on show (and the favourite once the session is over)."""
from __future__ import annotations

import functools
import hmac
import importlib.resources
import json
import logging
import math
import queue
import re
import secrets
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ...core.validate import is_int
from . import Choice

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # bytes; an answer is under 1 KiB
DRAIN_LIMIT = 1024 * 1024  # a refused body up to this size is read and dropped, so the client gets the answer
FINAL_WAIT_S = 2.0  # at the end, how long to wait for a polling page to fetch the final view
WILDCARD_HOSTS = ("", "0.0.0.0")

#: The page (HTML, style and script in one file), shipped in the package beside this module.
PAGE_ASSET = "web_assets/page.html"


@functools.lru_cache(maxsize=1)
def page() -> str:
    """The page's HTML, read once from the package (importlib.resources: works from a wheel or a zip too)."""
    return importlib.resources.files(__package__).joinpath(PAGE_ASSET).read_text(encoding="utf-8")


class Refused(Exception):
    """A request the page does not serve: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class WebFrontend:
    name = "web"
    interactive = False

    def __init__(self, host: str = "127.0.0.1", port: int = 8787, open_browser: bool = False):
        if not is_int(port) or not 0 <= port <= 65535:
            raise ValueError(f"search.frontend.port must be an integer 0-65535 (0: any free port), got {port!r}")
        self.host, self.port, self.open_browser = host, port, open_browser
        self.settings = (host, port, open_browser)  # one page per process and settings (tts.search.frontends)
        self.session = secrets.token_urlsafe(32)
        self._state: dict = {"waiting": False, "done": False, "round": 0, "token": "", "items": [], "prompt": "",
                             "run_dir": None, "best": None, "finished": 0}
        self._images: dict[int, bytes] = {}
        self._favourite: dict | None = None  # {"label", "image": bytes}: what the person picked first, last time
        self._answers: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._polled_at = -math.inf
        self._final_seen = threading.Event()

    @property
    def url(self) -> str:
        """The page's address, session token included (the only way in)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{'127.0.0.1' if host in WILDCARD_HOSTS else host}:{port}/?session={self.session}"

    def start(self) -> None:
        if self._httpd is not None:
            return
        self._httpd = _Server((self.host, self.port), _handler(self))
        threading.Thread(target=self._httpd.serve_forever, name="tts-web", daemon=True).start()
        print(f"human-preference search: open {self.url} in a browser (Ctrl-C here stops)", file=sys.stderr, flush=True)
        log.info("web interface at %s (its session token is printed on the terminal only)", self.url.split("?")[0])
        if self.open_browser:
            import webbrowser

            webbrowser.open(self.url)

    def close(self) -> None:
        """Stop serving (the process exiting does the same)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def present(self, round_, prompt, items, run_dir) -> Choice:
        self.start()
        token = secrets.token_urlsafe(8)
        images = {item.number: item.image.read_bytes() for item in items}
        with self._lock:
            if prompt != self._state["prompt"]:
                self._favourite = None  # a new prompt's session: no favourite yet
            self._images = images
            self._state = {"waiting": True, "done": False, "round": round_, "token": token, "prompt": prompt,
                           "run_dir": str(Path(run_dir).resolve()), "best": None, "finished": self._state["finished"],
                           "items": [{"number": i.number, "score": _finite(i.score), "metric": i.metric,
                                      "explore": i.explore, "seed": i.seed} for i in items]}
        while True:
            answer = self._answers.get()
            if answer["token"] == token:
                break
        if answer["picks"]:
            first = next(i for i in items if i.number == answer["picks"][0])
            score = "" if first.score is None else f", {first.metric} {first.score:.3g}"
            self._favourite = {"label": f"round {round_}, candidate #{first.number} ({first.image.name}{score})",
                               "image": images[first.number]}
        return Choice(list(answer["picks"]), answer["action"], answer["action"] == "stop")

    def finish(self, best_image: Path | None = None, run_dir: Path | None = None, label: str | None = None) -> None:
        """The session is over: show the favourite (``best_image`` if given, else the person's last first pick)
        and the run folder; give a polling page a moment to fetch them before the process may exit."""
        if best_image is not None and Path(best_image).is_file():
            self._favourite = {"label": label or Path(best_image).name, "image": Path(best_image).read_bytes()}
        with self._lock:
            best = None if self._favourite is None else {"label": self._favourite["label"]}
            run = str(Path(run_dir).resolve()) if run_dir is not None else self._state.get("run_dir")
            self._state = dict(self._state, waiting=False, done=True, best=best, run_dir=run,
                               finished=self._state["finished"] + 1)
            self._final_seen.clear()
            page_open = time.monotonic() - self._polled_at < FINAL_WAIT_S
        if page_open:
            self._final_seen.wait(FINAL_WAIT_S)

    # -- called by the HTTP handler -----------------------------------------------------------------------
    def state(self) -> dict:
        with self._lock:
            self._polled_at = time.monotonic()
            if self._state["done"] and self._state["best"] is None:
                self._final_seen.set()
            return dict(self._state)

    def image(self, round_: int, number: int) -> bytes | None:
        with self._lock:
            return self._images.get(number) if self._state.get("round") == round_ else None

    def best_image(self) -> bytes | None:
        with self._lock:
            if not self._state["done"] or self._favourite is None:
                return None
            self._final_seen.set()
            return self._favourite["image"]

    def answer(self, body: dict) -> None:
        """Validate and queue a posted choice; Refused if it is not acceptable."""
        action, picks = body.get("action"), body.get("picks", [])
        if not isinstance(action, str) or action not in ("pick", "reject", "stop"):
            raise Refused(400, "action must be 'pick', 'reject' or 'stop'")
        with self._lock:
            state = self._state
            if not state["waiting"] or not isinstance(body.get("token"), str) or body["token"] != state["token"]:
                raise Refused(409, "this round is no longer on show; reload the page")
            n = len(state["items"])
            if not isinstance(picks, list) or not all(type(k) is int and 1 <= k <= n for k in picks) \
                    or len(set(picks)) != len(picks):
                raise Refused(400, f"picks must be a list of distinct candidate numbers 1 to {n}")
            if action == "pick" and not picks:
                raise Refused(400, "pick at least one candidate, or reject all")
            if action == "reject" and picks:
                raise Refused(400, "a rejection picks nothing")
            self._state = dict(state, waiting=False)
        self._answers.put({"token": body["token"], "action": action, "picks": picks})


def _finite(x: float | None) -> float | None:
    """JSON has no NaN or infinity: such a score is shown as none."""
    return x if x is None or math.isfinite(x) else None


def parse_body(raw: bytes) -> dict:
    """A posted body as a JSON object; Refused(400) naming what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None
    try:
        body = json.loads(text)
    except RecursionError:
        raise Refused(400, "the body's JSON nests too deeply") from None
    except ValueError:
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body


def parse_host(value: str) -> tuple[str, int]:
    """A Host header (or an Origin's netloc) as (lower-case name, port); Refused(400) if it is not one."""
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]/@\s]+)(?::([0-9]{1,5}))?", value.strip())
    if m is None:
        raise Refused(400, "malformed Host header")
    return m.group(1).lower().rstrip("."), int(m.group(2) or 80)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    warned = False

    def handle_error(self, request, client_address) -> None:
        """A browser that closed its connection is not an error; anything else is one line, never a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("web page: %s from %s: %s", type(error).__name__, client_address[0], error)
        else:
            log.warning("web page: %s while answering %s: %s", type(error).__name__, client_address[0], error)
            log.debug("web page: traceback", exc_info=error)


def _handler(front: WebFrontend):
    class Handler(BaseHTTPRequestHandler):
        timeout = 15  # seconds a client may take to send its request
        body_read = False

        def log_message(self, format, *args):
            log.debug("web page: " + re.sub(r"session=[^&\s]*", "session=...", format % args))

        def handle(self):
            try:
                super().handle()
            except (ConnectionError, TimeoutError) as e:  # the browser went away
                log.debug("web page: %s: %s", type(e).__name__, e)
                self.close_connection = True

        def do_GET(self):
            try:
                path = self._check()
                if path == "/":
                    return self._send(200, page().encode(), "text/html; charset=utf-8")
                if path == "/api/state":
                    return self._json(200, front.state())
                data = self._image(path.strip("/").split("/"))
                if data is None:
                    raise Refused(404, "not found")
                return self._send(200, data, "image/png")
            except Refused as e:
                return self._refuse(e)

        def do_POST(self):
            try:
                if self._check() != "/api/choice":
                    raise Refused(404, "not found")
                if self.headers.get_content_type() != "application/json":
                    raise Refused(415, "answers are POSTed as application/json")
                if self.headers.get_content_charset("utf-8").lower() not in ("utf-8", "utf8"):
                    raise Refused(415, "answers are UTF-8")
                front.answer(parse_body(self._body()))
                return self._json(200, {"ok": True})
            except Refused as e:
                return self._refuse(e)

        def _check(self) -> str:
            """The request's path, once its Host, Origin and session token are this page's."""
            if self.path == "/favicon.ico":
                raise Refused(404, "not found")
            hosts = self.headers.get_all("Host") or []
            if len(hosts) != 1:
                raise Refused(400, "a request names exactly one Host")
            if parse_host(hosts[0]) not in self._allowed():
                raise Refused(403, f"Host {hosts[0][:80]!r} is not this page's address (DNS rebinding?)")
            origin = self.headers.get("Origin")
            if origin is not None:
                parts = urlsplit(origin)
                try:
                    ok = parts.scheme == "http" and not parts.path and parse_host(parts.netloc) in self._allowed()
                except Refused:
                    ok = False
                if not ok:
                    raise Refused(403, f"requests from Origin {origin[:80]!r} are not accepted")
            url = urlsplit(self.path)
            given = parse_qs(url.query).get("session", [""])[0]
            if not hmac.compare_digest(given.encode(), front.session.encode()):
                raise Refused(403, "missing or wrong session token: open the URL printed in the terminal")
            return url.path

        def _allowed(self) -> set[tuple[str, int]]:
            bound, port = self.server.server_address[:2]
            names = {"127.0.0.1", "localhost", bound, front.host.lower()}
            if bound in WILDCARD_HOSTS:  # reached over the network: by this interface's address or the machine's name
                names |= {self.connection.getsockname()[0], socket.gethostname().lower(), socket.getfqdn().lower()}
            return {(name, port) for name in names}

        def _image(self, parts: list[str]) -> bytes | None:
            if parts == ["img", "best"]:
                return front.best_image()
            if len(parts) == 3 and parts[0] == "img" and parts[1].isdecimal() and parts[2].isdecimal():
                return front.image(int(parts[1]), int(parts[2]))
            return None

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding") is not None:
                raise Refused(400, "send the body with a Content-Length, not a Transfer-Encoding")
            lengths = self.headers.get_all("Content-Length") or []
            if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,12}", lengths[0].strip()):
                raise Refused(400, "a POST needs one Content-Length: a number of bytes")
            n = int(lengths[0])
            if n > MAX_BODY:
                raise Refused(413, f"the body is {n} bytes; at most {MAX_BODY} are read")
            self.body_read = True
            try:
                raw = self.rfile.read(n)
            except TimeoutError:
                raw = b""
            if len(raw) != n:
                self.close_connection = True
                raise Refused(400, f"the body ended after {len(raw)} of its {n} bytes")
            return raw

        def _refuse(self, e: Refused) -> None:
            foreign = e.status == 403 and not e.message.startswith("missing")
            if foreign and not self.server.warned:
                self.server.warned = True
                log.warning("web page: refused a request: %s (further refusals are logged at DEBUG)", e.message)
            else:
                log.debug("web page: %d %s (%s %s)", e.status, e.message, self.command, self.path.split("?")[0])
            self._drain()
            self._json(e.status, {"error": e.message})

        def _drain(self) -> None:
            """Read and drop an unread request body (up to DRAIN_LIMIT), so closing does not reset the connection
            before the client has read the answer."""
            if self.command != "POST" or self.body_read:
                return
            self.close_connection = True
            length = (self.headers.get("Content-Length") or "").strip()
            n = int(length) if re.fullmatch(r"[0-9]{1,12}", length) else 0
            if n > DRAIN_LIMIT:
                return
            try:
                self.connection.settimeout(1.0)
                while n > 0:
                    chunk = self.rfile.read(min(n, 65536))
                    if not chunk:
                        break
                    n -= len(chunk)
            except OSError:
                pass

        def _json(self, code: int, payload: dict) -> None:
            self._send(code, json.dumps(payload).encode(), "application/json")

        def _send(self, code: int, data: bytes, ctype: str) -> None:
            try:
                self.send_response(code)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.send_header("cache-control", "no-store")
                self.send_header("x-content-type-options", "nosniff")
                self.send_header("referrer-policy", "no-referrer")
                self.send_header("content-security-policy", "frame-ancestors 'none'")
                self.end_headers()
                self.wfile.write(data)
            except (ConnectionError, TimeoutError) as e:  # the browser closed the page mid-answer
                log.debug("web page: %s while sending: %s", type(e).__name__, e)
                self.close_connection = True

    return Handler
