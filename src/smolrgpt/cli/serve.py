"""`smolrgpt serve`: the HTTP service and web page for a checkpoint (see serving/api.py)."""
from __future__ import annotations

import argparse
import ipaddress
import sys

from smolrgpt.errors import ConfigError
from smolrgpt.modeling.precision_modes import PRECISION_HELP, PRECISIONS


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="CKPT", help="checkpoint folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the service)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help=PRECISION_HELP)
    p.add_argument("--max-batch", type=int, default=8, help="questions answered together in one model call")
    p.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="how long the first waiting question waits for others to join its batch")
    p.add_argument("--queue-size", type=int, default=64, help="waiting questions before answering 503 busy")
    p.add_argument("--max-request-mb", type=float, default=20.0, help="largest request body (413 above)")
    p.add_argument("--max-image-pixels", type=int, default=7680 * 4320,
                   help="largest image, in pixels (413 above)")
    p.add_argument("--frame-cache", type=int, default=16,
                   help="uploaded frames (POST /v1/frames) kept with their vision features, LRU")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default answer length limit")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the model (default: torch's choice, one per core); 1 is faster "
                        "for tiny models and on busy machines")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def _check(args) -> None:
    for name in ("max_batch", "queue_size", "max_image_pixels", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch_wait_ms < 0 or args.max_request_mb <= 0 or args.frame_cache < 0:
        raise ConfigError("--batch-wait-ms and --frame-cache must be >= 0, --max-request-mb > 0")
    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads must be >= 1")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    import socket

    try:  # bind once here, so a bad --host or a port in use is one line before the model loads
        family, kind, proto, _, address = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(args):
    """Load the checkpoint and make the app (no server yet)."""
    from pathlib import Path

    import torch

    from smolrgpt.engine import SmolRGPT
    from smolrgpt.serving.api import create_app

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        engine = SmolRGPT.load(args.model, device=args.device, precision=args.precision,
                               batch_size=args.max_batch, max_new_tokens=args.max_new_tokens)
    except ValueError as exc:  # a precision the device cannot run
        raise ConfigError(str(exc)) from None
    return create_app(engine, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                      queue_size=args.queue_size, max_request_bytes=int(args.max_request_mb * 2**20),
                      max_image_pixels=args.max_image_pixels, frame_cache=args.frame_cache,
                      model_name=Path(args.model).resolve().name)


def run_serve(args) -> int:
    import uvicorn

    _check(args)
    app = build_app(args)
    if not _is_loopback(args.host):
        print(f"smolrgpt serve: warning: listening on {args.host}, reachable from other machines; the service "
              "has no authentication", file=sys.stderr)
    print(f"SmolRGPT serving {args.model} on http://{args.host}:{args.port}/ (API docs: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
