"""`eve-vlm serve`, the real entry point, in a subprocess on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
from serve_helpers import data_url, image_message, png_bytes

from eve_vlm.cli import main
from eve_vlm.testing import tiny_model_and_processor

pytestmark = pytest.mark.timeout(120)


def test_serve_command_end_to_end(tmp_path):
    model, processor = tiny_model_and_processor()
    model.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "eve_vlm.cli", "--log-level", "WARNING", "serve", "--model",
               str(tmp_path / "tiny"), "--device", "cpu", "--port", str(port), "--max-tokens-cap", "32"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "tiny"  # the folder's name
        response = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "tiny", "messages": [image_message(data_url(png_bytes(40, 40)))], "temperature": 0})
        assert response.status_code == 200
        assert response.json()["usage"]["completion_tokens"] <= 32  # --max-tokens-cap is the default
        assert "<script" in httpx.get(f"{url}/").text
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "serving tiny on" in output


def test_serve_command_reports_bad_settings(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path), "--allow-local-dir", str(tmp_path / "missing")]) == 2
    assert "--allow-local-dir" in capsys.readouterr().err
