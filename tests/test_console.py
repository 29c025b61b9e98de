"""The operator's console in a real headless Chromium, while a real edge agent streams.

mosquitto + the in-process receiver (with its metrics server, which serves the console)
+ the INT8 edge agent (subprocess, real time) on 8 s of the speech sample. The browser
loads the page, sees the device appear while it streams, selects it and plays its live
audio, and the screenshot it takes is not blank. Then the archive re-decodes the ended
session with the small decoder through the page. ~30-40 s.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from chromium import Chromium, chromium_path

from gacflow.audio import write_wav

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="chromium not installed")
DEVICE = "console-dev"


def http_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def test_console_shows_and_plays_a_streaming_device(broker, speech, tmp_path):
    from test_cloud_e2e import RunningReceiver

    from gacflow.cloud.console import serve_with_console
    from gacflow.model import Codec

    codec = Codec.from_bundle(decoder="small")
    rx = RunningReceiver(codec, broker.url, tmp_path / "out", client_id="rx-console",
                         mqtt_version="auto")
    server = serve_with_console(rx.rx, 0, decoder="small")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    write_wav(tmp_path / "in.wav", speech[: 8 * 16000])
    agent = subprocess.Popen(
        [sys.executable, "-m", "gacflow.edge.cli", "--broker", broker.url,
         "--device-id", DEVICE, "--input", str(tmp_path / "in.wav"), "--backend", "onnx",
         "--batch-seconds", "1", "--realtime", "--queue", str(tmp_path / "q.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    browser = Chromium()
    try:
        browser.navigate(f"{base}/console")
        row = f'document.querySelector(\'tr[data-device="{DEVICE}"]\')'
        assert browser.wait_for(f"!!{row}", timeout=40), "the device never appeared"
        assert agent.poll() is None, "the agent had already finished: not seen live"
        deadline = time.time() + 30  # a first second of decoded audio
        while time.time() < deadline:
            devs = http_json(f"{base}/console/api/devices")["devices"]
            if devs and devs[0]["live_audio_seconds"] >= 1.0:
                break
            time.sleep(0.3)
        else:
            pytest.fail("no live audio was decoded")
        assert devs[0]["online"] and devs[0]["bitrate"] >= 0
        browser.evaluate(f"{row}.click()")
        played = browser.evaluate(
            """(async () => {
                 const a = document.getElementById('live-audio');
                 await new Promise((ok, bad) => {
                   if (a.readyState >= 2) return ok();
                   a.addEventListener('canplay', ok, {once: true});
                   a.addEventListener('error', () => bad(new Error('audio error')), {once: true});
                 });
                 await a.play();
                 await new Promise(r => setTimeout(r, 800));
                 return {t: a.currentTime, paused: a.paused, d: a.duration};
               })()""", await_promise=True)
        assert played["t"] > 0 and played["d"] >= 1.0, played
        assert browser.wait_for("document.getElementById('live-name').textContent"
                                ".includes('last')", timeout=10)
        png = browser.screenshot()
        from PIL import Image

        img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
        assert img.shape[0] > 200 and img.shape[1] > 200
        colours = len(np.unique(img.reshape(-1, 3), axis=0))
        assert img.std() > 10 and colours > 50, (img.std(), colours)  # not a blank page
        (tmp_path / "console.png").write_bytes(png)

        _, err = agent.communicate(timeout=60)
        assert agent.returncode == 0, err.decode()
        assert rx.wait_sessions(1, timeout=30), "the session did not end"
        small = 'document.querySelector(\'#archive button[data-decoder="small"]\')'
        assert browser.wait_for(f"!!{small}", timeout=15), "the archive lists no session"
        sizes = browser.evaluate(
            "[...document.querySelectorAll('#archive tr:first-child button')]"
            ".map(b => b.dataset.decoder)")
        assert {"small", "large"} <= set(sizes)
        browser.evaluate(f"{small}.click()")
        dur = browser.wait_for(
            "(() => { const a = document.getElementById('archive-audio');"
            " return a.readyState >= 1 && a.duration; })()", timeout=30)
        assert dur and dur > 5.0, dur
    finally:
        browser.close()
        if agent.poll() is None:
            agent.kill()
        server.shutdown()
        rx.close()
