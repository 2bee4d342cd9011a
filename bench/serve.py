#!/usr/bin/env python3
"""HTTP inference under load: `strix serve` vs FastAPI + uvicorn + onnxruntime.

Both servers classify with EfficientNet-Lite0 (the fixture weights, given a free batch
dimension so Strix can batch): a POSTed JPEG is decoded, its shorter side resized to 256,
centre-cropped to 224, normalised, classified; the top 5 come back as JSON.

- Python: FastAPI + uvicorn (one worker), Pillow + numpy + onnxruntime (default threads), the
  work in FastAPI's thread pool (what a plain `def` handler gets), as such services are usually
  written.
- Strix: `strix serve --backend ort` (release build), dynamic batching (max batch 8, 2 ms).

Phases, one server at a time on loopback: warm-up, then `--seconds` at `--concurrency` clients
(keep-alive connections, the fixture photos in turn): requests/s, p50/p99 latency, errors, and
Strix's batch-size histogram. Then Strix alone: cold start (process start to first answer) and an
overload run (`--overload` clients against a queue of 8) counting 503s, sampling the server's RSS,
and checking it answers afterwards.

Usage: bench/serve.py [--seconds 20] [--concurrency 8] [--overload 64]   (after ./scripts/setup)
Installs fastapi and uvicorn into the venv on first use.
"""
import argparse
import glob
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from strix_run import FIXTURES, ROOT, environment, strix_binary

PY_SERVER = r'''
import io, sys
import numpy as np, onnxruntime as ort
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
import uvicorn
sys.path.insert(0, sys.argv[4])
from strix_run import efficientnet_input, softmax

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
labels = open(sys.argv[2]).read().splitlines()
app = FastAPI()

def classify(body):
    p = softmax(session.run(None, {"input": efficientnet_input(io.BytesIO(body))})[0][0])
    top = np.argsort(-p)[:5]
    return {"Labels": [{"Name": labels[i], "Confidence": float(100 * p[i]), "ClassId": int(i)} for i in top]}

@app.post("/predict")
async def predict(request: Request):
    body = await request.body()
    # CPU work in the thread pool, as a plain `def` handler would run.
    return await run_in_threadpool(classify, body)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn, path, body):
    conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
    r = conn.getresponse()
    r.read()
    return r.status


def wait_ready(port, path, body, proc, timeout=120):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if post(conn, path, body) == 200:
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.02)
    sys.exit(f"server on port {port} did not answer within {timeout} s")


def rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def load(port, path, bodies, seconds, concurrency, pid=None):
    """`concurrency` threads posting for `seconds`; returns stats."""
    stop = time.perf_counter() + seconds
    lat, statuses, lock = [], {}, threading.Lock()
    peak = [0.0]

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                status = post(conn, path, bodies[i % len(bodies)])
            except (OSError, http.client.HTTPException):
                status = "conn-error"
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            dt = time.perf_counter() - t
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    lat.append(dt)
            i += 1

    def sample():
        while time.perf_counter() < stop:
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    if pid:
        threads.append(threading.Thread(target=sample))
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 if lat else float("nan")
    return {"rps": statuses.get(200, 0) / took, "p50": q(0.50), "p99": q(0.99), "statuses": statuses, "rss": peak[0]}


def dynamic_batch_model(tmp):
    """The fixture EfficientNet-Lite0 with a symbolic batch dimension, and its spec."""
    import onnx

    model = onnx.load(os.path.join(FIXTURES, "models/classify/efficientnet_lite0.onnx"))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    onnx_path = os.path.join(tmp, "effnet.onnx")
    onnx.save(model, onnx_path)
    spec = subprocess.run(
        [strix_binary(), "models", "show", "efficientnet_lite0", "--toml"],
        capture_output=True, text=True, check=True, env=dict(os.environ, STRIX_MODEL_PATH=os.path.join(FIXTURES, "models")),
    ).stdout
    lines, section = [], ""
    for line in spec.splitlines():
        if line.startswith("["):
            section = line
        if section == "[weights]" and line.startswith(("sha256", "size")):
            continue
        if section == "[weights]" and line.startswith("file"):
            line = 'file = "effnet.onnx"'
        lines.append(line)
    spec_path = os.path.join(tmp, "effnet.toml")
    open(spec_path, "w").write("\n".join(lines) + "\n")
    os.makedirs(os.path.join(tmp, "classify"), exist_ok=True)
    labels = os.path.join(tmp, "classify/imagenet_labels.txt")
    open(labels, "w").write(open(os.path.join(FIXTURES, "models/classify/imagenet_labels.txt")).read())
    return onnx_path, spec_path, labels


def report(name, r):
    errors = sum(n for s, n in r["statuses"].items() if s != 200)
    print(f"  {name:<34} {r['rps']:7.1f} req/s   p50 {r['p50']:6.1f} ms   p99 {r['p99']:6.1f} ms   errors {errors}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--overload", type=int, default=64, help="clients in the overload run (queue of 8)")
    args = ap.parse_args()
    env = environment()
    py = sys.executable
    try:
        import fastapi, uvicorn  # noqa: F401
    except ImportError:
        subprocess.run([py, "-m", "pip", "install", "-q", "fastapi", "uvicorn"], check=True)
    bodies = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(FIXTURES, "images/*.jpg")))]
    strix = strix_binary()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, spec_path, labels = dynamic_batch_model(tmp)

        def strix_server(port, *extra):
            cmd = [strix, "serve", "--quiet", "--backend", "ort", "--model", f"effnet={spec_path}", "--port", str(port)]
            return subprocess.Popen(cmd + ["--max-batch", "8", "--max-delay-ms", "2", *extra], env=env)

        port = free_port()
        server = strix_server(port)
        cold = wait_ready(port, "/v1/models/effnet/predict", bodies[0], server)
        load(port, "/v1/models/effnet/predict", bodies, 2, args.concurrency)
        ours = load(port, "/v1/models/effnet/predict", bodies, args.seconds, args.concurrency, server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/v1/models")
        batches = json.loads(conn.getresponse().read())["models"][0]["batches"]
        server.terminate()
        server.wait()

        port = free_port()
        script = os.path.join(tmp, "pyserver.py")
        open(script, "w").write(PY_SERVER)
        pyserver = subprocess.Popen([py, script, onnx_path, labels, str(port), os.path.dirname(os.path.abspath(__file__))])
        wait_ready(port, "/predict", bodies[0], pyserver)
        load(port, "/predict", bodies, 2, args.concurrency)
        theirs = load(port, "/predict", bodies, args.seconds, args.concurrency, pyserver.pid)
        pyserver.terminate()
        pyserver.wait()

        print(f"EfficientNet-Lite0 over HTTP, {args.concurrency} clients x {args.seconds:.0f} s, loopback, {os.cpu_count()} cores")
        report("python (FastAPI+uvicorn+onnxruntime)", theirs)
        report("strix serve --backend ort", ours)
        print(f"  ratio: {ours['rps'] / theirs['rps']:.2f}x requests/s; p99 {ours['p99']:.1f} vs {theirs['p99']:.1f} ms")
        sizes = ", ".join("%d: %d" % (b["size"], b["count"]) for b in batches)
        print(f"  strix batch sizes (size: batches): {sizes}")
        print(f"  strix cold start (process start to first answer): {cold:.2f} s")
        print(f"  RSS under load: strix {ours['rss']:.0f} MiB, python {theirs['rss']:.0f} MiB")

        port = free_port()
        server = strix_server(port, "--queue", "8")
        wait_ready(port, "/v1/models/effnet/predict", bodies[0], server)
        over = load(port, "/v1/models/effnet/predict", bodies, 10, args.overload, server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        after = post(conn, "/v1/models/effnet/predict", bodies[0])
        alive = server.poll() is None
        server.terminate()
        server.wait()
        print(
            f"  overload, {args.overload} clients vs a queue of 8 for 10 s: statuses {over['statuses']}, "
            f"peak RSS {over['rss']:.0f} MiB, next request {after}, server alive: {alive}"
        )


if __name__ == "__main__":
    main()
