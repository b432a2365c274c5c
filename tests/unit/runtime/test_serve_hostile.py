"""Hostile input against a real running server, one class at a time (issue 15).

Each class of request that once got a 500, a plain-text error or an invalid 200 is sent here
over a raw socket to `tauon-runtime serve` running in a thread: every answer must be 4xx JSON
(or a strict-JSON 200), and the server must keep serving. The generated-input run over all of
them is test_serve_fuzz.py; tritonclient with its defaults is at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import io
import json
import socket
import struct
import threading
import time
import uuid
import zlib

import numpy as np
import pytest
from PIL import Image
from test_serve import MODEL, config, digits, metric, model_dir, png, served  # noqa: F401

from localkube.procutil import free_port
from tauon_runtime.serve import serve
from tauon_runtime.serve.images import decode_image, pixel_budget
from tauon_runtime.serve.metrics import MAX_PREDICTION_LABELS, ServeMetrics

pytestmark = pytest.mark.timeout(120)

INFER = f"/v2/models/{MODEL}/infer"
GOOD = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}


# ---------------------------------------------------------------------------------------------
# A real server (the entry point's own serve(), in a thread) and a raw HTTP client


class Running:
    def __init__(self, port: int, loop: asyncio.AbstractEventLoop, stop: asyncio.Event):
        self.port, self.loop, self.stop = port, loop, stop


@contextlib.contextmanager
def running(cfg):
    """`serve(cfg)` on a free port until the block ends; yields once ready."""
    result: dict = {}
    ready = threading.Event()

    def main():
        async def go():
            result["loop"], result["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            result["code"] = await serve(cfg, stop=result["stop"])

        asyncio.run(go())

    thread = threading.Thread(target=main, name="tauon-serve-test", daemon=True)
    thread.start()
    ready.wait(30)
    deadline = time.monotonic() + 60
    while exchange(cfg.port, request("GET", "/v2/health/ready"), quiet=True)[0] != 200:
        assert thread.is_alive() and time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.05)
    try:
        yield Running(cfg.port, result["loop"], result["stop"])
    finally:
        result["loop"].call_soon_threadsafe(result["stop"].set)
        thread.join(30)
    assert result.get("code") == 0


def server_config(model_dir, **overrides):  # noqa: F811 - the fixture's value
    return config(model_dir, host="127.0.0.1", port=free_port(), drainSeconds=0, **overrides)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):  # noqa: F811
    feedback = tmp_path_factory.mktemp("feedback") / "feedback.jsonl"
    cfg = server_config(model_dir, feedback={"enabled": True}, feedbackPath=str(feedback),
                        maxRequestBytes=1 << 20, requestTimeoutSeconds=1.0)
    with running(cfg) as s:
        yield s


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None,
            length: bool = True) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if length and "Transfer-Encoding" not in (headers or {}):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def exchange(port: int, raw: bytes, timeout: float = 20, quiet: bool = False):
    """Send raw bytes, read one response -> (status, headers, body); (0, {}, b"") if none."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(raw)  # a server that answered early (413) may stop reading
            response = http.client.HTTPResponse(sock)
            response.begin()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except (OSError, http.client.HTTPException):
        if quiet:
            return 0, {}, b""
        raise


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def strict(body: bytes):
    return json.loads(body, parse_constant=_no_constants)


def checked(status: int, headers: dict, body: bytes):
    """The contract of every answer: < 500; errors are JSON {"error": ...}; 200s strict JSON."""
    assert 0 < status < 500, (status, body[:300])
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:300])
        error = strict(body)["error"]
        assert isinstance(error, str) and error, body
        return error
    if headers.get("content-type", "").startswith("text/plain; version="):  # /metrics
        return body.decode()
    if "inference-header-content-length" in headers:
        return strict(body[: int(headers["inference-header-content-length"])])
    assert headers.get("content-type", "").startswith("application/json"), (status, headers)
    return strict(body)


def send(server, method, path, body=b"", headers=None, **kw):
    status, got_headers, data = exchange(server.port, request(method, path, body, headers, **kw))
    return status, checked(status, got_headers, data)


def post_json(server, path, value, headers=None):
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    return send(server, "POST", path, body, {"Content-Type": "application/json", **(headers or {})})


# ---------------------------------------------------------------------------------------------
# JSON the parser cannot take


@pytest.mark.parametrize("path", [INFER, "/v1/predict", "/v1/feedback"])
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested 1000 levels"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested"),
        (b'{"score": ' + b"9" * 5000 + b', "predictionId": "x"}', "more than 100 digits"),
        (b'{"inputs": [], "x": NaN}', "NaN"),
        (b'{"inputs": [], "x": -Infinity}', "Infinity"),
        (b'{"instances": [1]', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_json_past_the_parser_limits_is_400(server, path, body, words):
    status, error = post_json(server, path, body)
    assert status == 400 and words in error


def test_strings_do_not_count_as_nesting(server):
    status, _ = post_json(server, "/v1/predict", {"array": [0] * 64, "note": "[" * 500})
    assert status == 200


def test_a_score_too_large_for_a_float_is_400(server):
    status, body = post_json(server, "/v1/predict", {"array": [0] * 64})
    pid = body["predictions"][0]["predictionId"]
    for score, words in ((b"1" + b"0" * 400, "digits"), (b"1e400", "score: "), (b"-1e999", "score: ")):
        status, error = post_json(server, "/v1/feedback", b'{"predictionId": "%s", "score": %s}' % (pid.encode(), score))
        assert status == 400 and words in error, error


# ---------------------------------------------------------------------------------------------
# Every field of every envelope has a type


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (INFER, {"inputs": [GOOD], "outputs": 5}, "outputs:"),
        (INFER, {"inputs": [GOOD], "outputs": [5]}, "outputs[0]:"),
        (INFER, {"inputs": [GOOD], "outputs": [{"name": 5}]}, "outputs[0].name:"),
        (INFER, {"inputs": [GOOD], "outputs": [{"name": "labels", "parameters": {"binary_data": "yes"}}]}, "outputs[0].parameters.binary_data:"),
        (INFER, {"inputs": "x"}, "inputs:"),
        (INFER, {"inputs": [{**GOOD, "shape": "1,1,8,8"}]}, "inputs[0].shape:"),
        (INFER, {"inputs": [{**GOOD, "shape": [1.5, 1, 8, 8]}]}, "inputs[0].shape[0]:"),
        (INFER, {"inputs": [{**GOOD, "datatype": 32}]}, "inputs[0].datatype:"),
        (INFER, {"inputs": [{**GOOD, "name": None}]}, "inputs[0].name:"),
        (INFER, {"inputs": [{**GOOD, "parameters": []}]}, "inputs[0].parameters:"),
        (INFER, {"inputs": [GOOD], "id": 42}, "id:"),
        (INFER, {"inputs": [GOOD], "parameters": {"binary_data_output": 1}}, "parameters.binary_data_output:"),
        ("/v1/predict", {"instances": {"a": 1}}, "instances:"),
        ("/v1/predict", {"array": 7}, "array:"),
        ("/v1/feedback", {"predictionId": 7, "label": "1"}, "predictionId:"),
        ("/v1/feedback", {"predictionId": "x", "label": [1]}, "label:"),
        ("/v1/feedback", {"predictionId": "x", "score": "high"}, "score:"),
        ("/v1/feedback", {"predictionId": "x", "score": True}, "score:"),
    ],
)
def test_a_field_of_the_wrong_type_is_400_naming_it(server, path, body, field):
    status, error = post_json(server, path, body)
    assert status == 400 and error.startswith(field), error


# ---------------------------------------------------------------------------------------------
# Transport errors: 4xx, JSON, from the handlers and from the HTTP parser alike


def multipart(header_line: bytes) -> tuple[bytes, dict]:
    body = (b"--XX\r\n" + header_line + b"\r\nContent-Type: image/png\r\n\r\n"
            + png(np.zeros((8, 8), np.uint8)) + b"\r\n--XX--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=XX"}


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (request("POST", "/v1/predict", b"not gzip at all", {"Content-Type": "application/json", "Content-Encoding": "gzip"}), 400, "gzip"),
        (request("POST", INFER, b"\x00\x01garbage", {"Content-Encoding": "deflate"}), 400, "deflate"),
        (request("POST", INFER, b"hello", {"Content-Encoding": "br"}), 415, "'br'"),
        (request("POST", INFER, b"hello", {"Content-Encoding": "zstd"}), 415, "zstd"),
        (request("POST", INFER, b"hello", {"Content-Encoding": "compress"}), 415, "compress"),
        (request("POST", INFER, gzip.compress(b"{}"), {"Content-Encoding": "gzip, br"}), 415, "stacked"),
        (request("POST", "/v1/predict", *multipart(b'Content-Disposition: form-data; name="f"; filename="a.png"\x00')), 400, "multipart"),
        (request("POST", "/v1/predict", *multipart(b"Content-Dis\x00position: form-data")), 400, "multipart"),
        (request("POST", "/v1/predict", b"--XX\r\nno end", {"Content-Type": "multipart/form-data; boundary=XX"}), 400, "multipart"),
        (request("POST", "/v1/predict", b"zz\r\nhello\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"}), 400, "malformed HTTP request"),
        (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", 400, "malformed HTTP request"),
        (b"F@@ / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed HTTP request"),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed HTTP request"),
        (request("POST", "/v1/predict", b"{}", {"Content-Length": "2", "Content-Type": "application/json"}, length=True), 400, "malformed HTTP request"),
        (request("POST", INFER, b"{}", {"Expect": "bogus"}), 417, "only 100-continue"),
        (request("GET", "/nowhere", b"", {"Expect": "\xf6x"}), 417, "only 100-continue"),  # once a 500
        (request("GET", "/nowhere"), 404, "Not Found"),
        (request("DELETE", INFER), 405, "Method Not Allowed"),
        (request("BREW", INFER), 400, "malformed HTTP request"),  # llhttp knows its methods
        (request("PROPFIND", INFER), 405, "Method Not Allowed"),
        (request("POST", "/v1/predict", b"x" * (2 << 20), {"Content-Type": "image/png"}), 413, "over the limit"),
        (request("POST", "/v1/predict", gzip.compress(b" " * (4 << 20)), {"Content-Type": "application/json", "Content-Encoding": "gzip"}), 413, "over the limit"),
        (request("POST", "/v1/predict", b"{}", {"Content-Type": "text/html"}), 415, "Content-Type"),
    ],
)
def test_transport_errors_are_4xx_json(server, raw, status, words):
    got, headers, body = exchange(server.port, raw)
    error = checked(got, headers, body)
    assert got == status and words in error, (got, error)


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=", "multipart/form-data; boundary=\"", "multipart/form-data; boundary=" + "b" * 200,
     "image/png; charset=\xff", ";;;", "", "multipart/mixed; boundary=XX", "application/json; charset=latin-1",
     "application/json; charset=nonsense", "image/", "*/*"],
)
def test_odd_content_types_are_4xx_json_or_served(server, content_type):
    body = b"--XX\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n" + png(np.zeros((8, 8), np.uint8)) + b"\r\n--XX--\r\n"
    for data in (body, json.dumps({"array": [0] * 64}).encode(), png(np.zeros((8, 8), np.uint8))):
        send(server, "POST", "/v1/predict", data, {"Content-Type": content_type})  # checked: < 500, JSON


def test_compressed_bodies_are_decoded_and_100_continue_works(server):
    body = json.dumps({"inputs": [GOOD]}).encode()
    assert post_json(server, INFER, body, {"Expect": "100-continue"})[0] == 200
    for encoding, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        status, _ = post_json(server, INFER, data, {"Content-Encoding": encoding})
        assert status == 200, encoding


def test_slow_headers_and_slow_bodies_time_out_with_json(server):
    for raw in (b"   ",  # connected, and nothing sent
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n",  # the headers never finish
                request("POST", "/v1/predict", b'{"array": [', {"Content-Type": "application/json"})[:-5]):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            if raw.strip():
                sock.sendall(raw[:-3])
                time.sleep(0.2)
                sock.sendall(raw[-3:])  # still trickling
            response = http.client.HTTPResponse(sock)
            response.begin()
            error = checked(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        assert response.status == 408 and "did not arrive within 1s" in error, error
        assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------------------
# Numbers: nothing outside FP32 reaches the model, no NaN in a 200, feedback never 500


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (INFER, {"inputs": [{**GOOD, "data": [1e39] * 64}]}),
        (INFER, {"inputs": [{**GOOD, "datatype": "FP64", "data": [1e300] * 64}]}),
        (INFER, b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [1e400'
                + b", 0" * 63 + b"]}]}"),
        ("/v1/predict", {"array": [1e39] * 64}),
        ("/v1/predict", {"instances": [[-1e39] * 64]}),
    ],
)
def test_values_outside_fp32_are_400(server, path, body):
    status, error = post_json(server, path, body)
    assert status == 400 and "range" in error, error


def test_huge_finite_inputs_get_strict_json_and_feedback_works(server):
    for value in (3.4e38, -3.4e38, 1e30, 65504.0):
        status, body = post_json(server, "/v1/predict", {"array": [value] * 64})
        if status == 200:  # a finite answer, strict JSON (checked); feedback on it is stored
            pid = body["predictions"][0]["predictionId"]
            status, _ = post_json(server, "/v1/feedback", {"predictionId": pid, "label": "3", "score": 1})
            assert status == 201
        else:
            assert status == 400


# ---------------------------------------------------------------------------------------------
# The binary tensor data extension, both ways


def binary_infer(server, x: np.ndarray, outputs=None, parameters=None, datatype="FP32", extra=b"",
                 size=None, declared=None):
    raw = x.astype({"FP32": "<f4", "FP16": "<f2", "UINT8": "u1"}[datatype]).tobytes()
    header = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": declared or datatype,
                          "parameters": {"binary_data_size": len(raw) if size is None else size}}]}
    if outputs is not None:
        header["outputs"] = outputs
    if parameters is not None:
        header["parameters"] = parameters
    head = json.dumps(header).encode()
    status, headers, body = exchange(server.port, request(
        "POST", INFER, head + raw + extra,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}))
    return status, headers, body, checked(status, headers, body)


def split_outputs(headers, body, result):
    """The outputs of a binary-extension response -> {name: numpy array or list of str}."""
    offset = int(headers["inference-header-content-length"])
    got = {}
    for out in result["outputs"]:
        if "data" in out:
            got[out["name"]] = out["data"]
            continue
        size = out["parameters"]["binary_data_size"]
        raw = body[offset : offset + size]
        offset += size
        if out["datatype"] == "FP32":
            got[out["name"]] = np.frombuffer(raw, "<f4").reshape(out["shape"])
        else:
            items, i = [], 0
            while i < len(raw):
                (n,) = struct.unpack_from("<I", raw, i)
                items.append(raw[i + 4 : i + 4 + n].decode())
                i += 4 + n
            got[out["name"]] = items
    assert offset == len(body)
    return got


def test_binary_inputs_and_outputs_match_json(server, digits):  # noqa: F811
    x = digits["x_test"][:5].astype(np.float32)
    status, body = post_json(server, INFER, {"inputs": [{**GOOD, "shape": [5, 1, 8, 8], "data": x.ravel().tolist()}]})
    assert status == 200
    want = {o["name"]: o["data"] for o in body["outputs"]}

    status, headers, raw, result = binary_infer(server, x, parameters={"binary_data_output": True})
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    got = split_outputs(headers, raw, result)
    np.testing.assert_allclose(got["probabilities"].ravel(), want["probabilities"], rtol=1e-6)
    assert got["labels"] == want["labels"]

    # Per output: probabilities binary, labels as JSON; a UINT8 binary input.
    status, headers, raw, result = binary_infer(
        server, x, datatype="UINT8",
        outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "labels"}])
    got = split_outputs(headers, raw, result)
    assert got["labels"] == want["labels"] and got["probabilities"].shape == (5, 10)

    # Binary input, JSON output: no extension header in the answer.
    status, headers, raw, result = binary_infer(server, x)
    assert status == 200 and "inference-header-content-length" not in headers
    assert result["outputs"][1]["data"] == want["labels"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"size": 10}, "bytes"),
        ({"extra": b"\0" * 4}, "no input's binary_data_size accounts for"),
        ({"size": 10**9}, "declares 1000000000 bytes"),
        ({"datatype": "FP16", "declared": "FP32"}, "has 128 bytes of binary data but shape [1, 1, 8, 8] of FP32 needs 256"),
        ({"outputs": [{"name": "labels", "parameters": {"classification": 3}}]}, "classification"),
    ],
)
def test_binary_inputs_that_do_not_add_up_are_400(server, kwargs, words):
    status, _, _, error = binary_infer(server, np.zeros((1, 1, 8, 8)), **kwargs)
    assert status == 400 and words in error, error


@pytest.mark.parametrize("value", ["abc", "-1", "99999999", "1_0", ""])
def test_a_bad_inference_header_length_is_400(server, value):
    status, error = send(server, "POST", INFER, json.dumps({"inputs": [GOOD]}).encode(),
                         {"Inference-Header-Content-Length": value})
    assert status == 400 and "Inference-Header-Content-Length" in error


def test_server_metadata_declares_the_binary_extension(server):
    assert send(server, "GET", "/v2")[1]["extensions"] == ["binary_tensor_data"]


# ---------------------------------------------------------------------------------------------
# Versions: ready agrees with metadata and infer


def test_versioned_ready_agrees_with_metadata_and_infer(server):
    infer_body = json.dumps({"inputs": [GOOD]}).encode()
    for version, expected in (("1", 200), ("7", 404), ("01", 404), ("%00", 404)):
        base = f"/v2/models/{MODEL}/versions/{version}"
        codes = [send(server, "GET", base + "/ready")[0], send(server, "GET", base)[0],
                 post_json(server, base + "/infer", infer_body)[0]]
        assert codes == [expected] * 3, (version, codes)


# ---------------------------------------------------------------------------------------------
# Images: 16-bit greyscale scaled, MPO accepted, decoding bounded by memory


def image_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_a_16_bit_png_predicts_like_its_8_bit_twin(server, digits):  # noqa: F811
    labels = {}
    for bits in (8, 16):
        labels[bits] = []
        for pixels in digits["x_test"][:, 0]:
            if bits == 8:
                img = Image.fromarray(pixels, mode="L")
            else:
                img = Image.fromarray(pixels.astype(np.uint16) * 257)  # I;16, the full 16-bit range
                assert img.mode == "I;16"
            status, body = send(server, "POST", "/v1/predict", image_bytes(img, "PNG"), {"Content-Type": "image/png"})
            assert status == 200
            labels[bits].append(body["predictions"][0]["label"])
    assert labels[16] == labels[8]


def test_16_bit_and_32_bit_greyscale_decode_to_the_8_bit_pixels():
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    for img, fmt in ((Image.fromarray(pixels.astype(np.uint16) * 257), "PNG"),
                     (Image.fromarray(pixels.astype(np.int32) * 257, mode="I"), "TIFF")):
        assert Image.open(io.BytesIO(image_bytes(img, fmt))).mode in ("I;16", "I")
        np.testing.assert_array_equal(decode_image(image_bytes(img, fmt), (1, 8, 8))[0], pixels)


def test_an_mpo_from_a_phone_camera_decodes_its_first_frame(server):
    first = Image.fromarray(np.full((64, 64), 200, np.uint8)).convert("RGB")
    second = Image.fromarray(np.full((64, 64), 10, np.uint8)).convert("RGB")
    data = image_bytes(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = decode_image(data, (1, 8, 8))
    assert abs(int(out.mean()) - 200) <= 2
    status, _ = send(server, "POST", "/v1/predict", data, {"Content-Type": "image/jpeg"})
    assert status == 200


def test_an_image_declaring_too_many_pixels_is_413_before_decoding(server):
    import psutil

    rss = psutil.Process().memory_info().rss
    data = image_bytes(Image.new("RGBA", (7000, 7000)), "PNG", optimize=True)
    assert len(data) < 400_000  # small on the wire, 196 MB in memory
    for _ in range(3):
        status, error = send(server, "POST", "/v1/predict", data, {"Content-Type": "image/png"})
        assert status == 413 and "7000x7000" in error
    assert psutil.Process().memory_info().rss - rss < 100 << 20
    assert pixel_budget((1, 8, 8)) < 7000 * 7000 < pixel_budget((3, 512, 512))


def test_a_large_jpeg_is_decoded_at_reduced_scale():
    big = Image.fromarray(np.tile(np.linspace(0, 255, 6000, dtype=np.uint8), (6000, 1)))
    data = image_bytes(big, "JPEG", quality=50)
    assert pixel_budget((1, 8, 8)) < 6000 * 6000  # over the budget as declared ...
    out = decode_image(data, (1, 8, 8))  # ... but draft() decodes it at 1/8: 750x750
    assert out.shape == (1, 8, 8) and out[0, :, 0].mean() < out[0, :, -1].mean()


def test_exif_orientation_is_applied():
    pixels = np.zeros((16, 8), np.uint8)
    pixels[:, :4] = 255  # left half white, in a portrait image
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # the camera was rotated: view it rotated by 90 degrees clockwise
    out = decode_image(image_bytes(img, "PNG", exif=exif), (1, 8, 16))[0]
    assert out.shape == (8, 16) and out[:4].mean() > 200 and out[4:].mean() < 50  # white on top


# ---------------------------------------------------------------------------------------------
# Metrics: no label grows with what clients send


def test_metric_labels_stay_bounded(server):
    for method in ("PROPFIND", "MKCOL", "LOCK", "UNLOCK", "PURGE", "LINK") * 5:  # all llhttp lets by
        exchange(server.port, request(method, INFER))
    text = exchange(server.port, request("GET", "/metrics"))[2].decode()
    methods = {line.split('method="')[1].split('"')[0] for line in text.splitlines()
               if line.startswith("tauon_serve_requests_total{")}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert metric(text, "tauon_serve_requests_total", method="other", code="405") >= 30

    m = ServeMetrics()
    classes = [f"class-{i}" for i in range(5 * MAX_PREDICTION_LABELS)]
    m.track_labels(classes)
    for label in [*classes, "not-a-class"]:
        m.count_prediction(label)
    text = m.exposition().decode()
    series = [line for line in text.splitlines() if line.startswith("tauon_serve_predictions_total{")]
    assert len(series) == MAX_PREDICTION_LABELS + 1
    assert metric(text, "tauon_serve_predictions_total", label="other") == 4 * MAX_PREDICTION_LABELS + 1


# ---------------------------------------------------------------------------------------------
# A stock Open Inference Protocol client, with its defaults (binary data on)


def test_tritonclient_with_its_defaults(server, digits):  # noqa: F811
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        meta = client.get_model_metadata(MODEL)
        assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8]

        x = digits["x_test"][:20].astype(np.float32)
        inp = triton.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)  # binary_data=True by default
        result = client.infer(MODEL, [inp])  # no outputs named: all of them, binary
        probs = result.as_numpy("probabilities")
        labels = [b.decode() for b in result.as_numpy("labels")]
        assert probs.shape == (20, 10) and labels == [str(k) for k in probs.argmax(axis=1)]
        assert (probs.argmax(axis=1) == digits["y_test"][:20]).mean() >= 0.8
        assert len(result.get_response()["parameters"]["predictionIds"]) == 20

        outputs = [triton.InferRequestedOutput("labels")]  # binary_data=True by default
        again = client.infer(MODEL, [inp], outputs=outputs, model_version="1", request_id="r-1")
        assert [b.decode() for b in again.as_numpy("labels")] == labels
        assert again.get_response()["id"] == "r-1"

        with pytest.raises(triton.InferenceServerException, match="no version"):
            client.infer(MODEL, [inp], model_version="7")
    finally:
        client.close()


def test_the_server_still_answers_after_all_this(server):
    assert send(server, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, body = post_json(server, "/v1/predict", {"array": [0] * 64})
    assert status == 200 and uuid.UUID(body["predictions"][0]["predictionId"])
