"""``server.*`` of configs/serve.yaml: where the server listens, its batch and request limits, and who may call it."""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import re

from ...core.validate import is_int, is_number
from ...pipelines import PipelineConfigError

@dataclasses.dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8580
    batch_size: int = 8
    max_candidates: int = 256
    max_steps: int = 1000
    max_body_mb: float = 64
    batch_wait_ms: float = 50
    #: web pages that may call this server from a browser (CORS), e.g. ``[http://localhost:3000]``
    allowed_origins: list = dataclasses.field(default_factory=list)
    #: names clients reach this server by besides its address, localhost and this machine's name (a proxy's)
    allowed_hosts: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        for key in ("allowed_origins", "allowed_hosts"):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
                raise PipelineConfigError(f"server.{key} must be a list of strings, got {value!r}")
        for origin in self.allowed_origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise PipelineConfigError(f"server.allowed_origins: {origin!r} is not an origin "
                                          "(scheme://host[:port], no path), e.g. http://localhost:3000")
        for key in ("port", "batch_size", "max_candidates", "max_steps"):
            value = getattr(self, key)
            if not is_int(value) or value < (0 if key == "port" else 1):
                raise PipelineConfigError(f"server.{key} must be a {'non-negative' if key == 'port' else 'positive'} "
                                          f"integer, got {value!r}")
        if self.port > 65535:
            raise PipelineConfigError(f"server.port must be at most 65535 (0: any free port), got {self.port}")
        for key in ("max_body_mb", "batch_wait_ms"):
            value = getattr(self, key)
            if not is_number(value) or not 0 <= value < math.inf:
                raise PipelineConfigError(f"server.{key} must be a non-negative number, got {value!r}")

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

