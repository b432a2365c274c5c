"""Generated hostile input against every serve endpoint (hypothesis, fixed seed, bounded).

Over 5,000 requests across the classes of issue 15 (JSON past the parser's limits, envelopes
with fields of every wrong type, numbers outside FP32 with feedback on what they predicted,
the binary tensor extension with sizes that do and do not add up, transport errors, images of
every kind and of huge declared size, every path and method) go to one real server
(`python -m tauon_runtime serve`, in a process of its own so that its memory is its own) over
raw sockets. Every answer must be below 500, every error a JSON {"error": ...}, every 200
strict JSON, and the server's RSS must not grow by 100 MB over the run.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_serve import MODEL, digits, model_dir, served  # noqa: F401
from test_serve_hostile import GOOD, INFER, checked, exchange, request, server_config

from localkube.procutil import wait_for_url

pytestmark = pytest.mark.timeout(300)

RSS_GROWTH_LIMIT = 100 << 20
VERSIONED = f"/v2/models/{MODEL}/versions/1/infer"
POSTS = [INFER, VERSIONED, "/v1/predict", "/v1/feedback"]
GETS = ["/v2", "/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready",
        f"/v2/models/{MODEL}/versions/1", f"/v2/models/{MODEL}/versions/1/ready", "/v1/feedback/stats", "/metrics"]
DATATYPES = ["FP16", "FP32", "FP64", "BF16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
             "UINT32", "UINT64", "BOOL", "BYTES", "fp32", "F32", ""]
ITEMSIZE = {"FP16": 2, "BF16": 2, "INT16": 2, "UINT16": 2, "FP32": 4, "INT32": 4, "UINT32": 4,
            "FP64": 8, "INT64": 8, "UINT64": 8, "INT8": 1, "UINT8": 1, "BOOL": 1}
SETTINGS = dict(derandomize=True, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16)
extreme = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e39, -1e39, 3.4e38, 3.41e38, 65504.0, 65520.0, 1e308, -1e308, 5e-324, -0.0, 255.0, 2**63, 2**64]),
    st.integers(-(2**65), 2**65))


def post_json(path: str, body: bytes) -> bytes:
    return request("POST", path, body, {"Content-Type": "application/json"})


# ---------------------------------------------------------------------------------------------
# The classes


def literal(token: bytes) -> bytes:
    return b'{"predictionId": "x", "score": %s, "instances": [[%s]], "inputs": [{"data": [%s]}]}' % (token, token, token)


hostile_json = st.one_of(
    st.integers(1, 4000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 4000).map(lambda n: b'{"a":' * n + b"0" + b"}" * n),
    st.integers(1, 3000).map(lambda n: b'{"instances": ' + b"[" * n + b"0" + b"]" * n + b"}"),
    st.integers(15, 6000).map(lambda n: literal(b"7" * n)),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"1e-400", b"1E309", b"-0"]).map(literal),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=120),
)
json_class = st.builds(post_json, st.sampled_from(POSTS), hostile_json)


def _slots(value, out):
    """Every (container, key) in a JSON value, to replace or drop."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append((value, key))
        _slots(child, out)
    return out


@st.composite
def envelope_class(draw, pids):
    path = draw(st.sampled_from(POSTS))
    body = copy.deepcopy({
        INFER: {"id": "a", "inputs": [GOOD], "outputs": [{"name": "labels", "parameters": {"binary_data": False}}],
                "parameters": {"binary_data_output": False}},
        VERSIONED: {"inputs": [{**GOOD, "shape": [2, 1, 8, 8], "datatype": "UINT8", "data": [[0] * 64, [255] * 64]}]},
        "/v1/predict": {"instances": [[0] * 64]} if draw(st.booleans()) else {"array": [[1] * 8] * 8},
        "/v1/feedback": {"predictionId": draw(st.sampled_from(pids)), "label": "3", "score": 0.5},
    }[path])
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(body, [])
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        if draw(st.integers(0, 3)) == 0:
            del container[key]
        else:
            container[key] = draw(json_value)
    return post_json(path, json.dumps(body).encode())


@st.composite
def numbers_class(draw):
    n = draw(st.integers(1, 3))
    values = draw(st.lists(extreme, min_size=1, max_size=6))
    data = (values * 64 * n)[: 64 * n]
    kind = draw(st.sampled_from(["v2", "instances", "array"]))
    if kind == "v2":
        body = {"inputs": [{"name": "input", "shape": [n, 1, 8, 8], "datatype": draw(st.sampled_from(DATATYPES)), "data": data}]}
        return post_json(draw(st.sampled_from([INFER, VERSIONED])), json.dumps(body).encode())
    body = {"instances": [data[i * 64 : (i + 1) * 64] for i in range(n)]} if kind == "instances" else {"array": data[:64]}
    return post_json("/v1/predict", json.dumps(body).encode())


@st.composite
def binary_class(draw):
    datatype = draw(st.sampled_from(DATATYPES))
    n = draw(st.integers(1, 3))
    shape = draw(st.one_of(st.just([n, 1, 8, 8]), st.lists(st.integers(0, 9), max_size=5)))
    count = int(np.prod(shape)) if shape else 0
    exact = count * ITEMSIZE.get(datatype, 1)
    if draw(st.booleans()) and datatype in ("FP32", "FP16", "FP64", "UINT8", "INT64", "BF16"):
        values = np.asarray((draw(st.lists(st.floats(0, 255), min_size=1, max_size=4)) * exact)[:count], np.float64)
        raw = values.astype({"FP32": "<f4", "FP16": "<f2", "FP64": "<f8", "UINT8": "u1", "INT64": "<i8"}.get(datatype, "<u2")).tobytes()
    else:
        raw = draw(st.binary(min_size=min(exact, 1600), max_size=min(exact, 1600)) if draw(st.booleans()) else st.binary(max_size=64))
    declared = len(raw) if draw(st.booleans()) else draw(st.integers(-1, 4000))
    tensor = {"name": "input", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": declared}}
    if draw(st.integers(0, 4)) == 0:
        tensor["data"] = [0] * count
    header = {"inputs": [tensor] * draw(st.sampled_from([1, 1, 1, 2]))}
    if draw(st.booleans()):
        header["outputs"] = [{"name": name, "parameters": {"binary_data": draw(st.booleans())}}
                             for name in draw(st.lists(st.sampled_from(["probabilities", "labels", "logits"]), max_size=3))]
    header["parameters"] = {"binary_data_output": draw(st.booleans())}
    head = json.dumps(header).encode()
    length = draw(st.one_of(st.just(str(len(head))), st.integers(0, len(head) + len(raw) + 4).map(str),
                            st.sampled_from(["", "x", "-1", " 12 ", "1e3", "0x10", str(10**20)])))
    body = head + raw + draw(st.one_of(st.just(b""), st.binary(max_size=8)))
    return request("POST", draw(st.sampled_from([INFER, VERSIONED])), body,
                   {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": length})


def _encode(body: bytes, encoding: str, corrupt: int) -> bytes:
    if "gzip" in encoding.lower():
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if corrupt and body:
        body = body[: corrupt % (len(body) + 1)] + bytes([corrupt % 256]) + body[corrupt % (len(body) + 1) + 1 :]
    return body


@st.composite
def transport_class(draw):
    method = draw(st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "BREW"]))
    path = draw(st.sampled_from(POSTS + GETS + ["/", "/v3", "/v2/models", "/v1/predict/x"]))
    content = draw(st.sampled_from([json.dumps({"inputs": [GOOD]}).encode(), json.dumps({"array": [0] * 64}).encode(),
                                    png_bytes(np.zeros((8, 8), np.uint8)), b""]) | st.binary(max_size=200))
    encoding = draw(st.sampled_from(["", "gzip", "deflate", "br", "zstd", "identity", "gzip, gzip", "x-gzip",
                                     "compress", "GZIP", "gzip;q=1", "identity, deflate"]))
    corrupt = draw(st.one_of(st.just(0), st.integers(1, 10**6)))
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "image/png", "text/plain", "application/octet-stream",
                                                     "multipart/form-data; boundary=XX", "multipart/form-data", "text/html"]))}
    if headers["Content-Type"].startswith("multipart") and draw(st.booleans()):
        part_head = draw(st.binary(max_size=60).filter(lambda b: b"\r\n\r\n" not in b))
        content = (b"--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.png\"\r\n" + part_head + b"\r\n\r\n"
                   + content + draw(st.sampled_from([b"\r\n--XX--\r\n", b"\r\n--XX", b"", b"\r\n--YY--\r\n"])))
    if encoding:
        headers["Content-Encoding"] = encoding
    if draw(st.integers(0, 5)) == 0:
        name = draw(st.sampled_from(["X-A", "Expect", "Content-Length", "Transfer-Encoding", "Host", "Content-Type",
                                     "Inference-Header-Content-Length"]))
        headers[name] = draw(st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)).decode("latin-1")
    body = _encode(content, encoding, corrupt)
    if draw(st.integers(0, 4)) == 0 and "Transfer-Encoding" not in headers:  # chunked framing, sometimes broken
        size = draw(st.sampled_from([b"%x" % len(body), b"zz", b"-1", b"%x" % (len(body) + 1)]))
        return request(method, path, size + b"\r\n" + body + b"\r\n0\r\n\r\n", {**headers, "Transfer-Encoding": "chunked"})
    return request(method, path, body, headers)


def png_bytes(pixels: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **kw)
    return buf.getvalue()


def declared_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@st.composite
def image(draw) -> bytes:
    kind = draw(st.sampled_from(["PNG", "PNG16", "JPEG", "MPO", "GIF", "BMP", "TIFF", "WEBP", "bomb", "cut", "garbage"]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "bomb":
        return declared_png(draw(st.integers(1, 200_000)), draw(st.integers(1, 200_000)))
    if kind == "garbage":
        return draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"RIFF", b""])) + draw(st.binary(max_size=80))
    if kind == "PNG16":
        return png_bytes(pixels[..., 0].astype(np.uint16) * 257)
    if kind == "MPO":
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="MPO", save_all=True, append_images=[Image.fromarray(pixels[::-1])])
        data = buf.getvalue()
    else:
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "LA", "I"]))
        img = Image.fromarray(pixels).convert(mode)
        fmt = "PNG" if kind == "cut" else kind
        try:
            buf = io.BytesIO()
            img.save(buf, format=fmt)
        except (OSError, ValueError, KeyError):  # a mode the format cannot hold
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format=fmt)
        data = buf.getvalue()
    return data[: draw(st.integers(0, len(data)))] if kind == "cut" else data


@st.composite
def images_class(draw):
    if draw(st.integers(0, 3)) == 0:
        files = draw(st.lists(image(), min_size=1, max_size=3))
        body = b"".join(b'--XX\r\nContent-Disposition: form-data; name="f"; filename="%d.img"\r\nContent-Type: image/png\r\n\r\n' % i
                        + f + b"\r\n" for i, f in enumerate(files)) + b"--XX--\r\n"
        return request("POST", "/v1/predict", body, {"Content-Type": "multipart/form-data; boundary=XX"})
    ctype = draw(st.sampled_from(["image/png", "image/jpeg", "image/webp", "application/octet-stream", "image/x-anything"]))
    top_k = draw(st.sampled_from(["", "?topK=3", "?topK=0", "?topK=-5", "?top_k=99999", "?topK=x", "?topK=" + "9" * 30]))
    return request("POST", "/v1/predict" + top_k, draw(image()), {"Content-Type": ctype})


segment = st.one_of(st.sampled_from([MODEL, "other", "1", "7", "", "..", "%00", "%2F", "a" * 300]), st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"), max_size=10))
paths_class = st.one_of(
    st.builds(lambda p: request("GET", p), st.sampled_from(GETS)),
    st.builds(lambda name, version, tail: request("GET", f"/v2/models/{name}/versions/{version}{tail}"),
              segment, segment, st.sampled_from(["", "/ready", "/infer", "/x"])),
    st.builds(lambda name, tail, query: request("GET", f"/v2/models/{name}{tail}{query}"),
              segment, st.sampled_from(["", "/ready", "/versions", "/infer"]), st.sampled_from(["", "?a=b", "?x=%ZZ", "?" + "a" * 2000])),
)


# ---------------------------------------------------------------------------------------------
# The run


class Process:
    def __init__(self, port: int, proc: subprocess.Popen):
        self.port, self.proc = port, proc

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):  # noqa: F811
    work = tmp_path_factory.mktemp("fuzz")
    cfg = server_config(model_dir, feedback={"enabled": True}, feedbackPath=str(work / "feedback.jsonl"),
                        maxRequestBytes=256 << 10, requestTimeoutSeconds=2.0)
    (work / "serve.json").write_text(cfg.model_dump_json(by_alias=True))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3] / "runtime"), os.environ.get("PYTHONPATH", "")])}
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "tauon_runtime", "serve", "--config", str(work / "serve.json")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_url(f"http://127.0.0.1:{cfg.port}/v2/health/ready", 90, proc=proc)
        yield Process(cfg.port, proc)
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        text = (work / "serve.log").read_text(errors="replace")
        print(f"\nserver log: {len(text.splitlines())} lines")
        # What hostile input may leave in the log: nothing at ERROR (no tracebacks, no floods).
        assert " ERROR " not in text and "Traceback" not in text, text[-3000:]


def answer(server, raw: bytes, tally: Counter):
    status, headers, body = exchange(server.port, raw)
    result = checked(status, headers, body)
    tally["requests"] += 1
    tally[f"{status // 100}xx"] += 1
    if status == 200 and "inference-header-content-length" in headers:  # binary outputs add up
        sizes = [o.get("parameters", {}).get("binary_data_size", 0) for o in result["outputs"]]
        assert int(headers["inference-header-content-length"]) + sum(sizes) == len(body)
    return status, result


def prediction_id(result) -> str | None:
    if "predictions" in result:
        return result["predictions"][0]["predictionId"]
    return result.get("parameters", {}).get("predictionIds", [None])[0]


feedback_body = st.fixed_dictionaries({"predictionId": st.just("")}, optional={
    "label": st.one_of(st.sampled_from([str(i) for i in range(10)]), json_value),
    "trueLabel": st.one_of(st.sampled_from(["3", "x"]), json_value),
    "score": st.one_of(extreme, json_value)})


def run_class(server, name: str, strategy, examples: int, tally: Counter) -> None:
    """`examples` requests drawn from `strategy`; each answer checked as it comes."""

    @settings(max_examples=examples, **SETTINGS)
    @given(raw=strategy, data=st.data())
    def one(raw, data):
        status, result = answer(server, raw, tally)
        tally[name] += 1
        pid = prediction_id(result) if status == 200 and isinstance(result, dict) else None
        if pid and name == "numbers":  # feedback on whatever these numbers predicted
            body = {**data.draw(feedback_body), "predictionId": pid}
            answer(server, post_json("/v1/feedback", json.dumps(body).encode()), tally)
            tally["feedback"] += 1

    one()


def test_generated_hostile_requests_never_get_5xx(server):
    tally: Counter = Counter()
    pids = [prediction_id(answer(server, post_json("/v1/predict", json.dumps({"array": [i] * 64}).encode()), tally)[1])
            for i in range(8)]
    before = server.rss()
    started = time.monotonic()
    for name, strategy, examples in [
        ("json", json_class, 750),
        ("envelope", envelope_class(pids), 900),
        ("numbers", numbers_class(), 650),
        ("binary", binary_class(), 800),
        ("transport", transport_class(), 900),
        ("images", images_class(), 700),
        ("paths", paths_class, 400),
    ]:
        run_class(server, name, strategy, examples, tally)
    time.sleep(0.5)  # let the last answers finish
    grown = server.rss() - before
    print(f"\n{dict(tally)} in {time.monotonic() - started:.0f}s; server RSS grew {grown / 2**20:.1f} MiB")
    assert tally["requests"] >= 5000
    assert tally["2xx"] > 300 and tally["4xx"] > 3000  # both sides of every class were reached
    assert grown < RSS_GROWTH_LIMIT, grown
    assert exchange(server.port, request("GET", "/v2/health/ready"))[0] == 200
