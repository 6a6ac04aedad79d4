"""Text made safe for the report's HTML (shared by every section of the page)."""
from __future__ import annotations

import html
from typing import Any


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)
