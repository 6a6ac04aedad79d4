"""The terminal front-end: a numbered contact sheet PNG per round (path printed; shown inline in
terminals that speak the iTerm2 image protocol), answers typed on stdin. Plain line input, so it
works over SSH and in tmux; bad input gets a hint and the question again; end of input stops."""
from __future__ import annotations

import base64
import io
import os
import sys

from . import ANSWER_HELP, AnswerError, Choice, contact_sheet, parse_answer


class TerminalFrontend:
    name = "terminal"
    interactive = True  # asks on the console: the loop draws no progress bar over the question

    def __init__(self, inline_images: str = "auto"):
        if inline_images not in ("auto", "always", "never"):
            raise ValueError(f"search.frontend.inline_images must be auto, always or never, got {inline_images!r}")
        self.inline_images = inline_images

    def present(self, round_, prompt, items, run_dir) -> Choice:
        sheet_path = run_dir / "feedback" / f"{items[0].image.stem.split('_i@')[0]}_i@{round_}_sheet.png"
        sheet_path.parent.mkdir(parents=True, exist_ok=True)
        sheet = contact_sheet(items)
        sheet.save(sheet_path)
        out = sys.stdout
        print(f"\nround {round_}: {prompt}", file=out)
        for item in items:
            score = "" if item.score is None else f"  {item.metric} {item.score:.3g}"
            print(f"  {item.number:2d}: seed {item.seed}{score}{'  (explore)' if item.explore else ''}", file=out)
        print(f"contact sheet: {sheet_path}", file=out)
        if self._inline():
            buf = io.BytesIO()
            sheet.save(buf, format="PNG")
            data = base64.b64encode(buf.getvalue()).decode()
            out.write(f"\033]1337;File=inline=1;size={len(buf.getvalue())}:{data}\a\n")
        return self._ask(len(items))

    def _ask(self, n: int) -> Choice:
        while True:
            print(f"your choice ({ANSWER_HELP}): ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:  # end of input (Ctrl-D, closed pipe): stop, keeping everything
                print("\nend of input: stopping", flush=True)
                return Choice([], "stop", True)
            try:
                return parse_answer(line, n)
            except AnswerError as e:
                print(f"  {e}", flush=True)

    def _inline(self) -> bool:
        if self.inline_images != "auto":
            return self.inline_images == "always"
        return (sys.stdout.isatty() and "TMUX" not in os.environ
                and os.environ.get("TERM_PROGRAM") in ("iTerm.app", "WezTerm"))
