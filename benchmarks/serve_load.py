"""Load on the HTTP service: concurrent clients on loopback, throughput, latency, and no cross-talk.

    python benchmarks/serve_load.py --model tiny --clients 1,4,8 --requests 48
    python benchmarks/serve_load.py --model ckpt/135m --clients 1,4 --requests 16 --max-new-tokens 16

Starts `smolrgpt serve` in a subprocess on 127.0.0.1 (a free port), sends --requests distinct requests per
concurrency level from N asyncio clients (httpx), each a synthetic warehouse frame with its own boxes and
question, inline (base64 JSON) or by frame id (--mode frame). A level stops issuing requests after
--duration seconds. Then, with the server stopped, it asks every request alone through the engine and checks
that the served answer (text, category, normalized answer) is exactly that one: batching must not mix rows.

--model is a checkpoint folder, or `tiny` (random init, written by `smolrgpt init` to a temporary folder) or
`tiny-lively` (tiny with large random language-model weights, so answers differ from request to request and a
mix-up would show). Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

QUESTIONS = [
    ("How far is the pallet <mask> from the pallet <mask>?", 2),
    ("Is the pallet <mask> to the left of the pallet <mask>?", 2),
    ("Which of the pallets <mask> <mask> <mask> is the leftmost?", 3),
    ("Given the buffer region <mask> and the pallets <mask> <mask>, how many pallets are in the buffer?", 3),
    ("Describe the scene.", 0),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="checkpoint folder, or 'tiny' / 'tiny-lively'")
    p.add_argument("--clients", default="1,4,8", help="concurrency levels, comma-separated")
    p.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    p.add_argument("--duration", type=float, default=120.0, help="stop issuing requests after this many seconds")
    p.add_argument("--mode", choices=["inline", "frame"], default="inline",
                   help="inline: images in every request; frame: frames uploaded once, asked by frame_id")
    p.add_argument("--frames", type=int, default=4, help="distinct frames")
    p.add_argument("--size", default="640x360", help="frame size WIDTHxHEIGHT")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server and of the check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-check", action="store_true", help="do not compare with the engine alone")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------- model
def resolve_model(name: str, workdir: Path) -> Path:
    if name not in ("tiny", "tiny-lively"):
        return Path(name)
    folder = workdir / name
    if name == "tiny":
        subprocess.run([sys.executable, "-m", "smolrgpt.cli", "init", "--preset", "smolrgpt-tiny", "--out",
                        str(folder)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return folder
    import torch

    from smolrgpt.modeling.checkpoint import save_checkpoint
    from smolrgpt.modeling.config import SmolRGPTConfig
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.processing.processor import SmolRGPTProcessor
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer

    torch.manual_seed(0)
    config = SmolRGPTConfig.from_preset("smolrgpt-tiny")
    model = SmolRGPTForConditionalGeneration.from_scratch(config).eval()
    with torch.no_grad():
        for p in model.language_model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return save_checkpoint(model, SmolRGPTProcessor.for_model(build_tiny_tokenizer(), config), folder)


# ---------------------------------------------------------------------------------------- requests
def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def make_frames(count: int, width: int, height: int) -> list[tuple[bytes, bytes]]:
    from smolrgpt.serving.inputs import _procedural_example, _synthetic_example

    frames = []
    for seed in range(count):
        try:
            ex = _synthetic_example(100 + seed, width, height)
        except Exception:  # noqa: BLE001 - the generator is optional
            ex = _procedural_example(100 + seed, width, height)
        frames.append((png(ex.rgb), png(ex.depth)))
    return frames


def make_requests(n: int, frames: int, width: int, height: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        question, tags = QUESTIONS[i % len(QUESTIONS)]
        boxes = []
        for _ in range(tags):
            w, h = int(rng.integers(20, width // 3)), int(rng.integers(20, height // 3))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            boxes.append([x, y, x + w, y + h])
        out.append({"frame": int(rng.integers(0, frames)), "question": question, "boxes": boxes, "id": f"r{i}"})
    return out


# -------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, model: Path, port: int, max_clients: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "smolrgpt.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms),
           "--queue-size", str(max(64, 2 * max_clients)), "--max-new-tokens", str(args.max_new_tokens),
           "--precision", args.precision, "--frame-cache", str(max(16, args.frames)), "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def wait_healthy(client, url: str, proc: subprocess.Popen, timeout: float = 300.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            r = await client.get(url + "/health")
            if r.status_code == 200:
                return r.json()
        except Exception:  # noqa: BLE001 - not up yet
            pass
        await asyncio.sleep(0.25)
    raise SystemExit("the server did not become healthy in time")


def request_body(req: dict, frames_b64, frame_ids) -> dict:
    body = {"question": req["question"], "regions": [{"box": b} for b in req["boxes"]], "id": req["id"]}
    if frame_ids is not None:
        body["frame_id"] = frame_ids[req["frame"]]
    else:
        body["image"], body["depth"] = frames_b64[req["frame"]]
    return body


async def run_level(client, url: str, clients: int, requests: list[dict], frames_b64, frame_ids,
                    duration: float) -> dict:
    queue = list(enumerate(requests))
    results: dict[int, dict] = {}
    started = time.perf_counter()

    async def worker():
        while queue and time.perf_counter() - started < duration:
            i, req = queue.pop(0)
            t0 = time.perf_counter()
            try:
                r = await client.post(url + "/v1/ask", json=request_body(req, frames_b64, frame_ids))
                data = r.json()
                results[i] = {"status": r.status_code, "latency": time.perf_counter() - t0, "data": data}
            except Exception as exc:  # noqa: BLE001 - a transport error counts as a failure
                results[i] = {"status": -1, "latency": time.perf_counter() - t0, "data": {"detail": repr(exc)}}

    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    ok = [r for r in results.values() if r["status"] == 200]
    lat = sorted(r["latency"] * 1000 for r in ok)

    def pct(q):
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else float("nan")

    return {"clients": clients, "sent": len(results), "ok": len(ok), "errors": len(results) - len(ok),
            "wall_s": wall, "rps": len(ok) / wall if wall else 0.0, "p50_ms": pct(0.5), "p95_ms": pct(0.95),
            "max_ms": lat[-1] if lat else float("nan"),
            "mean_batch": statistics.mean(r["data"]["timings"]["batch_size"] for r in ok) if ok else 0.0,
            "results": results}


async def load(args, model: Path, levels: list[int], requests: list[dict], frames) -> tuple[list[dict], dict]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args, model, port, max(levels))
    try:
        limits = httpx.Limits(max_connections=max(levels) + 4)
        async with httpx.AsyncClient(timeout=600, limits=limits, trust_env=False) as client:
            health = await wait_healthy(client, url, proc)
            frames_b64 = [(base64.b64encode(a).decode(), base64.b64encode(b).decode()) for a, b in frames]
            frame_ids = None
            if args.mode == "frame":
                frame_ids = []
                for rgb, depth in frames:
                    r = await client.post(url + "/v1/frames", files={"image": ("rgb.png", rgb),
                                                                     "depth": ("depth.png", depth)})
                    r.raise_for_status()
                    frame_ids.append(r.json()["frame_id"])
            warm = dict(requests[0], id="warm-up")  # the first generate() call is slow: keep it out of timings
            (await client.post(url + "/v1/ask", json=request_body(warm, frames_b64, frame_ids))).raise_for_status()
            rows = [await run_level(client, url, n, requests, frames_b64, frame_ids, args.duration) for n in levels]
            health = (await client.get(url + "/health")).json()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows, health


# --------------------------------------------------------------------------------------------- check
def engine_alone(args, model: Path, requests: list[dict], frames) -> tuple[list[dict], float]:
    """Each request answered alone (its own fresh frame, batch of one), and the mean time per request."""
    from PIL import Image

    from smolrgpt.data.sample import Region
    from smolrgpt.engine import Question, SmolRGPT

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    engine = SmolRGPT.load(model, precision=args.precision, max_new_tokens=args.max_new_tokens)
    decoded = [(Image.open(io.BytesIO(a)), Image.open(io.BytesIO(b))) for a, b in frames]
    for img, dep in decoded:
        img.load(), dep.load()
    out, times = [], []
    warm = engine.frame(*decoded[0])
    engine.ask_batch([Question(warm, "Describe the scene.")])
    for req in requests:
        t0 = time.perf_counter()
        frame = engine.frame(*decoded[req["frame"]])
        answer = engine.ask_batch([Question(frame, req["question"], [Region("box", b) for b in req["boxes"]])])[0]
        times.append(time.perf_counter() - t0)
        out.append({"answer": answer.text, "category": answer.category, "normalized_answer": answer.normalized_answer})
    return out, statistics.mean(times)


def main(argv=None) -> int:
    args = parse_args(argv)
    levels = [int(v) for v in args.clients.split(",") if v.strip()]
    width, height = (int(v) for v in args.size.lower().split("x"))
    workdir = Path(tempfile.mkdtemp(prefix="smolrgpt-load-"))
    try:
        model = resolve_model(args.model, workdir)
        frames = make_frames(args.frames, width, height)
        requests = make_requests(args.requests, args.frames, width, height, args.seed)
        rows, health = asyncio.run(load(args, model, levels, requests, frames))
        expected, solo_s = (None, float("nan")) if args.skip_check else engine_alone(args, model, requests, frames)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    mismatches = 0
    distinct = set()
    for row in rows:
        row["mismatches"] = 0
        for i, r in row["results"].items():
            if r["status"] != 200 or expected is None:
                continue
            got = {k: r["data"][k] for k in ("answer", "category", "normalized_answer")}
            distinct.add(got["answer"])
            if got != expected[i] or r["data"]["id"] != requests[i]["id"]:
                row["mismatches"] += 1
                if row["mismatches"] <= 3:
                    print(f"MISMATCH clients={row['clients']} request {i}: served {got} alone {expected[i]}",
                          file=sys.stderr)
        mismatches += row["mismatches"]

    m = health["model"]
    print(f"serve_load: model {args.model} ({m['preset']}, {m['parameters'] / 1e6:.1f}M parameters, {m['device']}, "
          f"{args.precision}), {args.mode} requests of {width}x{height} frames, max_new_tokens {args.max_new_tokens}, "
          f"max_batch {args.max_batch}, batch_wait {args.batch_wait_ms:g} ms, {os.cpu_count()} CPU cores, "
          f"torch threads {args.threads or 'default'}")
    header = f"{'clients':>7} {'sent':>5} {'ok':>5} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} " \
             f"{'max ms':>8} {'batch':>6} {'mismatch':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['clients']:>7} {r['sent']:>5} {r['ok']:>5} {r['errors']:>6} {r['rps']:>7.2f} {r['p50_ms']:>8.0f} "
              f"{r['p95_ms']:>8.0f} {r['max_ms']:>8.0f} {r['mean_batch']:>6.2f} {r['mismatches']:>8}")
    if expected is not None:
        print(f"engine alone, one request at a time (fresh frame each): {1 / solo_s:.2f} req/s "
              f"({solo_s * 1000:.0f} ms per request); {len(distinct)} distinct answers served")
    errors = sum(r["errors"] for r in rows)
    print(json.dumps({
        "benchmark": "serve_load", "model": args.model, "preset": m["preset"], "parameters": m["parameters"],
        "device": m["device"], "precision": args.precision, "threads": args.threads, "mode": args.mode, "frame_size": [width, height],
        "max_new_tokens": args.max_new_tokens, "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
        "levels": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "results"}
                   for r in rows],
        "engine_alone_rps": None if expected is None else round(1 / solo_s, 3),
        "distinct_answers": len(distinct), "errors": errors, "mismatches": mismatches,
        "checked": expected is not None, "largest_batch": health["largest_batch"]}))
    return 1 if errors or mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
