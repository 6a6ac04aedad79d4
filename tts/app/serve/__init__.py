"""``tts-serve``: a generation server (FastAPI + uvicorn) that keeps pipelines loaded for searches.

    tts-serve                                          # 127.0.0.1:8580, every pipeline preset by name
    tts-serve server.port=0 models.preload=[shapes]    # any free port (the URL is printed), shapes loaded
    TTS_SERVER_TOKEN=... tts-serve server.host=0.0.0.0 pipeline=sdxl pipeline.dtype=fp16

Searches point at it with ``tts-search pipeline.server=http://HOST:8580`` (tts.pipelines.remote). Endpoints:
``GET /`` (models available and loaded), ``GET /health`` (devices, loaded models, memory, queue depth),
``POST /models/{name}/load`` and ``/unload``, ``POST /generate`` (prompt or prompt embeddings, noise
lineages, call settings -> PNGs and NFEs, as tts.sampling.generate makes them locally) and ``POST /generate/stream``
(the same, as Server-Sent Events: queued, started, progress per denoising step, result or error).
Generation runs one batch at a time per device, fair across clients, same-model requests batched
(tts.app.scheduler); pipelines live in the model manager (tts.pipelines.models). A bad request gets a 4xx naming the
problem; a client that disconnects has its queued work cancelled. Any address but loopback needs a bearer
token from ``TTS_SERVER_TOKEN``; when it is set, every request must carry it.

The package: ``settings`` (server.*), ``validation`` (what a request may hold), ``service`` (the generation
service), ``guards`` (same-site and bearer-token middleware), ``routes`` (the endpoints), and here the command.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys

from ...core.validate import install_hint
from ...pipelines import PipelineConfigError, PipelineSpec
from ...pipelines.models import configure, preset_spec
from ...pipelines.remote import TOKEN_ENV
from . import routes
from .guards import BearerToken, SameSite
from .validation import EMBED_KEYS, MAX_LINEAGE_DEPTH, RequestError, check_lineage, decode_embeds
from .routes import create_app, sse
from .service import GenerationService, Payload, memory_report
from .settings import ServerSettings

log = logging.getLogger("tts.app.serve")
#: the shortest TTS_SERVER_TOKEN a server reachable from other machines accepts
MIN_TOKEN_CHARS = 16



# -- the command ------------------------------------------------------------------------------------------

def compose(argv: list[str]):
    """The server config (configs/serve.yaml) with Hydra-style overrides; pipeline settings the preset's YAML
    does not list are accepted (``pipeline.cpu_offload=true``)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ...core.configtree import config_dir

    fields = {f.name for f in dataclasses.fields(PipelineSpec)}
    overrides = []
    for arg in argv:
        key = arg.partition("=")[0]
        if key.startswith("pipeline.") and key.split(".")[1] in fields and not arg.startswith("+"):
            arg = "++" + arg
        overrides.append(arg)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return hydra_compose(config_name="serve", overrides=overrides)


def build_registry(pipeline_node) -> tuple[dict[str, PipelineSpec], str]:
    """Every pipeline preset by name, the configured ``pipeline`` (with its overrides) replacing its namesake."""
    from omegaconf import OmegaConf

    from ...core.configtree import choices

    registry = {}
    for name in choices("pipeline"):
        try:
            registry[name] = preset_spec(name)
        except PipelineConfigError as e:
            log.warning("pipeline preset %s is not served: %s", name, e)
    settings = OmegaConf.to_container(pipeline_node, resolve=True)
    settings.pop("_target_", None)
    spec = PipelineSpec(**settings)
    if spec.server:
        raise PipelineConfigError("tts-serve generates itself: drop pipeline.server")
    spec.check()
    registry[spec.name] = spec
    return registry, spec.name


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise PipelineConfigError(f"cannot listen on {host}:{port} ({e.strerror}): pick another server.port "
                                  "(0: any free port) or stop what holds it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def prepare(argv: list[str]):
    """Config, token check, registry, socket, preloading: everything before serving, each failure one line."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(argv)
    except (HydraException, OmegaConfBaseException) as e:
        raise PipelineConfigError(str(e).splitlines()[0] + " (keys: server.host, server.port, server.batch_size, "
                                  "server.batch_wait_ms, server.max_candidates, server.max_steps, server.max_body_mb, "
                                  "server.allowed_origins, server.allowed_hosts, "
                                  "models.max_resident, models.max_memory_gb, models.preload, pipeline.*)") from None
    try:
        settings = ServerSettings(**OmegaConf.to_container(cfg.server, resolve=True))
    except TypeError as e:
        raise PipelineConfigError(f"server: {e}") from None
    token = os.environ.get(TOKEN_ENV) or None
    if not settings.loopback and not token:
        raise PipelineConfigError(f"server.host={settings.host} is reachable from other machines: set {TOKEN_ENV} "
                                  "(clients send it as a bearer token) or bind server.host=127.0.0.1")
    if not settings.loopback and len(token) < MIN_TOKEN_CHARS:
        raise PipelineConfigError(f"{TOKEN_ENV} has {len(token)} characters; beyond loopback it needs at least "
                                  f"{MIN_TOKEN_CHARS}: set it to e.g. the output of python -c 'import secrets; "
                                  "print(secrets.token_urlsafe(32))'")
    registry, default = build_registry(cfg.pipeline)
    sock = bind(settings.host, settings.port)
    try:
        models = configure(OmegaConf.to_container(cfg.models, resolve=True), registry)
    except BaseException:
        sock.close()
        raise
    return GenerationService(registry, models, settings, default), token, sock


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    if routes.FastAPI is None:
        print(f"tts-serve: error: the server needs FastAPI and uvicorn: {install_hint('serve')}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service, token, sock = prepare(argv)
    except (PipelineConfigError, ValueError, FileNotFoundError) as e:
        print(f"tts-serve: error: {e}", file=sys.stderr)
        sys.exit(2)
    import uvicorn

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"tts-serve: serving on http://{shown}:{port} (models: {', '.join(sorted(service.registry))}; loaded: "
          f"{', '.join(service.models.names()) or 'none'}; batch_size {service.settings.batch_size}"
          f"{'; bearer token required' if token else ''})", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(service, token), log_level="warning", access_log=False))
    server.run(sockets=[sock])

