"""The web front-end: a small page on 127.0.0.1 (port configurable, printed at start) showing the round's
candidates. Click (or press 1-9) to pick, in order of preference; Enter submits, r rejects all, q
stops; a Stop button too. Binds to loopback unless ``host`` says otherwise. The page polls
``/api/state``; ``POST /api/choice`` answers; images are served only for the round on show."""
from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import Choice

log = logging.getLogger(__name__)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tts: human-preference search</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; }
#grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 3px solid #ddd; border-radius: 6px; padding: 6px; background: white; cursor: pointer; width: 172px; }
.card img { width: 160px; height: 160px; image-rendering: pixelated; object-fit: contain; display: block; }
.card.picked { border-color: #1a7f37; }
.rank { font-weight: bold; color: #1a7f37; }
button { font-size: 1em; margin-right: .6em; padding: .4em .9em; }
#status { margin: 1em 0; color: #555; }
</style></head>
<body>
<h2 id="prompt">waiting for the first round...</h2>
<div id="status"></div>
<div id="grid"></div>
<p>
<button id="submit">Submit picks (Enter)</button>
<button id="reject">Reject all (r)</button>
<button id="stop">Stop (q)</button>
</p>
<p style="color:#777">Click candidates (or press their numbers 1-9) in order of preference; the first is your favourite.</p>
<script>
let state = null, picks = [];
function render() {
  const grid = document.getElementById("grid");
  grid.innerHTML = "";
  if (!state || !state.waiting) { return; }
  document.getElementById("prompt").textContent = "round " + state.round + ": " + state.prompt;
  for (const item of state.items) {
    const card = document.createElement("div");
    const rank = picks.indexOf(item.number);
    card.className = "card" + (rank >= 0 ? " picked" : "");
    card.id = "candidate-" + item.number;
    card.innerHTML = '<img src="/img/' + state.round + '/' + item.number + '?p=' + state.token + '" alt="candidate ' +
      item.number + '"><div>#' + item.number + (item.score === null ? "" : " &middot; " + item.metric + " " +
      item.score.toPrecision(3)) + (item.explore ? " &middot; explore" : "") +
      (rank >= 0 ? ' <span class="rank">pick ' + (rank + 1) + '</span>' : "") + "</div>";
    card.onclick = () => toggle(item.number);
    grid.appendChild(card);
  }
}
function toggle(n) {
  if (!state || !state.waiting || n > state.items.length) { return; }
  const i = picks.indexOf(n);
  if (i >= 0) { picks.splice(i, 1); } else { picks.push(n); }
  render();
}
async function send(action) {
  if (!state || !state.waiting) { return; }
  if (action === "pick" && picks.length === 0) { document.getElementById("status").textContent = "pick at least one, or reject all (r)"; return; }
  const body = {round: state.round, token: state.token, action: action, picks: action === "pick" ? picks : []};
  const r = await fetch("/api/choice", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
  const answer = await r.json();
  document.getElementById("status").textContent = r.ok ? "sent; waiting for the next round..." : answer.error;
  if (r.ok) { picks = []; state.waiting = false; render(); }
}
async function poll() {
  try {
    const r = await fetch("/api/state");
    const s = await r.json();
    if (!state || s.token !== state.token || s.waiting !== state.waiting || s.done !== state.done) { state = s; picks = []; render();
      document.getElementById("status").textContent = s.done ? "session finished: you can close this page" :
        (s.waiting ? "pick your favourites" : "generating...");
      if (s.done) { document.getElementById("prompt").textContent = "session finished"; } }
  } catch (e) { document.getElementById("status").textContent = "tts-search is not running"; }
  setTimeout(poll, 400);
}
document.getElementById("submit").onclick = () => send("pick");
document.getElementById("reject").onclick = () => send("reject");
document.getElementById("stop").onclick = () => send("stop");
document.addEventListener("keydown", (e) => {
  if (e.key >= "1" && e.key <= "9") { toggle(parseInt(e.key)); }
  else if (e.key === "Enter") { send("pick"); }
  else if (e.key === "r") { send("reject"); }
  else if (e.key === "q") { send("stop"); }
});
poll();
</script></body></html>
"""


class WebFrontend:
    def __init__(self, host: str = "127.0.0.1", port: int = 8787, open_browser: bool = False):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"search.port must be an integer 0-65535 (0: any free port), got {port!r}")
        self.host, self.port, self.open_browser = host, port, open_browser
        self._state: dict = {"waiting": False, "done": False, "round": 0, "token": "", "items": [], "prompt": ""}
        self._images: dict[int, bytes] = {}
        self._answers: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._httpd = None
        self._count = 0

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        if self._httpd is not None:
            return
        self._httpd = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name="tts-web", daemon=True).start()
        print(f"human-preference search: open {self.url} in a browser (Ctrl-C here stops)", file=sys.stderr, flush=True)
        log.info("web interface at %s", self.url)
        if self.open_browser:
            import webbrowser

            webbrowser.open(self.url)

    def present(self, round_, prompt, items, run_dir) -> Choice:
        self.start()
        with self._lock:
            self._count += 1
            token = f"{self._count}"
            self._images = {item.number: item.image.read_bytes() for item in items}
            self._state = {"waiting": True, "done": False, "round": round_, "token": token, "prompt": prompt,
                           "items": [{"number": i.number, "score": i.score, "metric": i.metric, "explore": i.explore,
                                      "seed": i.seed} for i in items]}
        while True:
            answer = self._answers.get()
            if answer.get("token") == token:
                break
        with self._lock:
            self._state = dict(self._state, waiting=False)
        return Choice(list(answer["picks"]), answer["action"], answer["action"] == "stop")

    def finish(self) -> None:
        with self._lock:
            self._state = dict(self._state, waiting=False, done=True)

    # -- called by the HTTP handler -----------------------------------------------------------------------
    def state(self) -> dict:
        with self._lock:
            return dict(self._state)

    def image(self, round_: int, number: int) -> bytes | None:
        with self._lock:
            return self._images.get(number) if self._state.get("round") == round_ else None

    def answer(self, body: dict) -> str | None:
        """Validate and queue a posted choice; an error message if it is not acceptable."""
        with self._lock:
            state = self._state
            if not state.get("waiting") or body.get("token") != state.get("token"):
                return "this round is no longer on show; reload the page"
            n = len(state["items"])
        action, picks = body.get("action"), body.get("picks") or []
        if action not in ("pick", "reject", "stop"):
            return f"unknown action {action!r}"
        if action == "pick" and not picks:
            return "pick at least one candidate, or reject all"
        if not all(isinstance(k, int) and 1 <= k <= n for k in picks) or len(set(picks)) != len(picks):
            return f"picks must be distinct numbers 1 to {n}"
        with self._lock:
            self._state = dict(self._state, waiting=False)
        self._answers.put({"token": body["token"], "action": action, "picks": picks})
        return None


def _handler(front: WebFrontend):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/":
                return self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            if path == "/api/state":
                return self._send(200, json.dumps(front.state()).encode(), "application/json")
            parts = path.strip("/").split("/")
            if len(parts) == 3 and parts[0] == "img" and parts[1].isdigit() and parts[2].isdigit():
                data = front.image(int(parts[1]), int(parts[2]))
                if data is not None:
                    return self._send(200, data, "image/png")
            return self._send(404, b"not found", "text/plain")

        def do_POST(self):
            if self.path != "/api/choice":
                return self._send(404, b"not found", "text/plain")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            except json.JSONDecodeError:
                return self._send(400, json.dumps({"error": "body is not JSON"}).encode(), "application/json")
            error = front.answer(body if isinstance(body, dict) else {})
            payload = {"error": error} if error else {"ok": True}
            return self._send(400 if error else 200, json.dumps(payload).encode(), "application/json")

        def _send(self, code, data: bytes, ctype: str):
            self.send_response(code)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            self.wfile.write(data)

    return Handler
