"""Benchmark `eve-vlm serve` on loopback: time to first token, decode speed, throughput under load.

    python bench/serve_bench.py                       # a tiny random model (a smoke run of the harness)
    python bench/serve_bench.py --model runs/eve-7b --device cuda --max-tokens 128 --json bench.json

Starts the server as a subprocess on a free loopback port, then measures, with streaming requests
(one image each, greedy):
  * 1 and 8 concurrent requests: time to first token (TTFT) and each request's decode tokens/s;
  * 32 concurrent streaming clients issuing --load-requests requests in all: tokens/s and requests/s.
Prints a table and writes the numbers (with the server's batching counters) as JSON.

Timings are of streamed text: TTFT is the time to the first non-empty content chunk, and a
request's decode speed is (completion tokens - 1) / (time from its first to its last content
chunk), the median over requests. transformers' TextStreamer holds symbols back until the next
space, so a random model's output (bytes and symbols, few spaces) arrives in bursts and its
per-request speed is coarse; total tok/s (all completion tokens / wall time) is exact.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


@dataclass
class Sample:
    ttft_s: float
    decode_tokens_per_s: float | None
    completion_tokens: int
    total_s: float


# Random models for runs without a checkpoint: the tiny test model, and a ~0.9B-parameter one
# (Llama-shaped decoder, 1024-wide PEL) whose decode cost resembles a small real VLM's on a GPU.
RANDOM_SIZES = {
    "tiny": {},
    "medium": {"text": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16,
                        "num_key_value_heads": 8, "intermediate_size": 5632},
               "vision_width": 1024, "vision_heads": 8, "image_size": 448},
}


def random_model_dir(directory: Path, size: str) -> Path:
    """A random EVE whose EOS logit is zeroed, so every answer runs to max_tokens."""
    import torch

    from eve_vlm.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(**RANDOM_SIZES[size])
    with torch.no_grad():
        model.get_output_embeddings().weight[processor.tokenizer.eos_token_id].zero_()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, model: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "eve_vlm.cli", "--log-level", "WARNING", "serve", "--model", str(model),
               "--model-name", "bench", "--host", "127.0.0.1", "--port", str(port), "--device", args.device,
               "--dtype", args.dtype, "--max-batch-size", str(args.max_batch_size), "--max-queue", "256",
               "--max-tokens-cap", str(max(args.max_tokens, 16)), "--batch-wait-ms", str(args.batch_wait_ms)]
    server = subprocess.Popen(command)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not start in time")


def image_url(size: int, seed: int) -> str:
    array = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def one_request(client: httpx.AsyncClient, url: str, image: str, max_tokens: int) -> Sample:
    body = {"model": "bench", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": max_tokens,
            "temperature": 0, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "Describe the image."}]}]}
    start = time.perf_counter()
    first = last = None
    tokens = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    end = time.perf_counter()
    first, last = first or end, last or end
    decode = (tokens - 1) / (last - first) if tokens > 1 and last > first else None
    return Sample(first - start, decode, tokens, end - start)


async def concurrent_rounds(url: str, images: list[str], concurrency: int, rounds: int,
                            max_tokens: int) -> tuple[list[Sample], float]:
    """`rounds` times: `concurrency` requests sent together, the next round once all are answered."""
    samples: list[Sample] = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        start = time.perf_counter()
        for r in range(rounds):
            jobs = [one_request(client, url, images[(r * concurrency + i) % len(images)], max_tokens)
                    for i in range(concurrency)]
            samples += await asyncio.gather(*jobs)
        return samples, time.perf_counter() - start


async def load_test(url: str, images: list[str], clients: int, total: int, max_tokens: int) -> tuple[list[Sample], float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    samples: list[Sample] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            samples.append(await one_request(client, url, images[i % len(images)], max_tokens))

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        return samples, time.perf_counter() - start


def summarize(name: str, samples: list[Sample], wall_s: float) -> dict[str, float | str | None]:
    decode = [s.decode_tokens_per_s for s in samples if s.decode_tokens_per_s]
    ttft = sorted(s.ttft_s for s in samples)
    tokens = sum(s.completion_tokens for s in samples)
    return {"scenario": name, "requests": len(samples), "ttft_ms_mean": 1000 * statistics.mean(ttft),
            "ttft_ms_p50": 1000 * ttft[len(ttft) // 2], "ttft_ms_p90": 1000 * ttft[int(len(ttft) * 0.9)],
            "decode_tok_s_per_request": statistics.median(decode) if decode else None,
            "completion_tokens": tokens, "wall_s": wall_s, "throughput_tok_s": tokens / wall_s,
            "requests_per_s": len(samples) / wall_s}


def print_table(rows: list[dict]) -> None:
    columns = [("scenario", "scenario", "{}"), ("requests", "n", "{}"), ("ttft_ms_mean", "TTFT mean ms", "{:.1f}"),
               ("ttft_ms_p90", "TTFT p90 ms", "{:.1f}"), ("decode_tok_s_per_request", "decode tok/s/req", "{:.1f}"),
               ("throughput_tok_s", "total tok/s", "{:.1f}"), ("requests_per_s", "req/s", "{:.2f}")]
    cells = [[label for _, label, _ in columns]]
    for row in rows:
        cells.append([("-" if row[key] is None else fmt.format(row[key])) for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="a saved EVE model (default: a random one)")
    parser.add_argument("--random-size", choices=tuple(RANDOM_SIZES), default="tiny",
                        help="the random model's size when no --model is given")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--image-size", type=int, default=448, help="side of the random test images (pixels)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 1- and 8-request scenarios")
    parser.add_argument("--load-clients", type=int, default=32, help="concurrent streaming clients under load")
    parser.add_argument("--load-requests", type=int, default=64, help="requests in all under load")
    parser.add_argument("--max-batch-size", type=int, default=32, help="the server's --max-batch-size")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="the server's --batch-wait-ms")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for the server")
    parser.add_argument("--json", type=Path, default=Path("serve_bench.json"), help="where to write the results")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_model_dir(Path(tmp) / "random", args.random_size)
        port = free_port()
        server = start_server(args, model, port)
        url = f"http://127.0.0.1:{port}"
        try:
            images = [image_url(args.image_size, seed) for seed in range(8)]
            asyncio.run(concurrent_rounds(url, images, 2, 1, 4))  # warm-up
            rows = [summarize(f"{c} concurrent", *asyncio.run(concurrent_rounds(url, images, c, args.rounds,
                                                                                 args.max_tokens)))
                    for c in (1, 8)]
            samples, wall = asyncio.run(load_test(url, images, args.load_clients, args.load_requests,
                                                  args.max_tokens))
            rows.append(summarize(f"{args.load_clients} clients", samples, wall))
            metrics = httpx.get(f"{url}/metrics").json()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print_table(rows)
    print(f"server batching: {metrics['batches']} batches, largest {metrics['largest_batch']}, "
          f"sizes {metrics['batch_sizes']}")
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"config": {**config, "model": str(args.model or f"random {args.random_size}")}, "results": rows,
              "server_metrics": metrics, "python": sys.version.split()[0], "cpus": os.cpu_count()}
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
