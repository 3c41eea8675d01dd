"""Shared helpers for the serving tests (ask CLI, HTTP API, web page, README example); no tests here.

`lively_checkpoint()` writes, once per test session, a tiny checkpoint whose language model has large random
weights: its greedy answers differ from question to question and region to region, so comparing a served
answer with the engine's answer is meaningful (a random-init checkpoint answers "" to everything).
"""
from __future__ import annotations

import atexit
import base64
import functools
import io
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


@functools.cache
def lively_checkpoint() -> Path:
    import torch

    from conftest import liven
    from smolrgpt.modeling.checkpoint import save_checkpoint
    from smolrgpt.modeling.config import SmolRGPTConfig
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.processing.processor import SmolRGPTProcessor
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="smolrgpt-serving-"))
    atexit.register(shutil.rmtree, folder, True)
    torch.manual_seed(0)
    config = SmolRGPTConfig.from_preset("smolrgpt-tiny")
    model = liven(SmolRGPTForConditionalGeneration.from_scratch(config).eval())
    return save_checkpoint(model, SmolRGPTProcessor.for_model(build_tiny_tokenizer(), config), folder / "lively")


def load_engine(max_new_tokens: int = 8, **kwargs):
    from smolrgpt.engine import SmolRGPT

    return SmolRGPT.load(lively_checkpoint(), max_new_tokens=max_new_tokens, **kwargs)


def frame_arrays(seed: int = 0, size=(90, 160)):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (*size, 3), dtype=np.uint8), rng.integers(0, 256, size, dtype=np.uint8))


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def b64(array_or_bytes) -> str:
    data = array_or_bytes if isinstance(array_or_bytes, bytes) else png_bytes(array_or_bytes)
    return base64.b64encode(data).decode()


def http_client():
    """An HTTP client for the loopback test servers that ignores proxy settings from the environment."""
    import httpx

    return httpx.Client(trust_env=False, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn serving an app on a free loopback port in a background thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)
