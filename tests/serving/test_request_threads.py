"""Where a REST request's signature call runs: on the event loop when the server is idle (no
thread hand-off), on the request pool when other requests are in the server (calls in parallel)."""
from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
import time
import urllib.request

import numpy as np


def _rest_predict(server, image: bytes) -> np.ndarray:
    body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/sicot:predict"
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
        return np.array(json.loads(r.read())["predictions"][0]["scores"], np.float32)


def test_rest_runs_on_the_loop_when_idle_and_on_the_pool_under_concurrency(fixture_server, images):
    model = fixture_server.manager.get("sicot")
    call = model._call_direct
    threads, lock = [], threading.Lock()

    def recorded(signature_name, checked, delay=0.0):
        with lock:
            threads.append(threading.current_thread())
        time.sleep(delay)  # keeps concurrent requests in the server together
        return call(signature_name, checked)

    alone = _rest_predict(fixture_server, images["red_jpeg"])
    model._call_direct = recorded
    try:
        for _ in range(3):
            np.testing.assert_allclose(_rest_predict(fixture_server, images["red_jpeg"]), alone, rtol=1e-6)
        sequential = list(threads)
        threads.clear()
        model._call_direct = lambda s, c: recorded(s, c, delay=0.3)
        barrier = threading.Barrier(4)

        def send(_):
            barrier.wait()
            return _rest_predict(fixture_server, images["red_jpeg"])

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(send, range(4)))
    finally:
        model._call_direct = call
    for answer in answers:
        np.testing.assert_allclose(answer, alone, rtol=1e-6)
    loop_thread = fixture_server._loop_thread
    assert sequential == [loop_thread] * 3, [t.name for t in sequential]
    # At most the first of the concurrent requests found the server idle; the others ran on the
    # pool, side by side (one loop thread would have run them one after the other).
    pool_threads = [t for t in threads if t is not loop_thread]
    assert len(threads) == 4 and len(pool_threads) >= 3, [t.name for t in threads]
