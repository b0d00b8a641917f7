"""The Files API end to end: real gateway processes driven with the official SDK (and raw HTTP
where the SDK cannot send a malformed request). Bytes, metadata, ownership, expiry, limits."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI
from openai.types import FileDeleted, FileObject
from PIL import Image

from tests.conftest import MASTER_KEY, USER_KEY, Admin, Gateway, start_gateway

# No model is called here: one unreachable deployment keeps start-up fast (no local model).
CONFIG: dict[str, Any] = {"models": {"m": {"deployments": [{
    "provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-5.2", "catalog": "gpt-5.2",
}]}}}
SMALL_MAX = 1024 * 1024
SMALL_BATCH_MAX = 256 * 1024
FILE_ID = re.compile(r"^file-[a-z0-9]{24,}$")
AUTH = {"Authorization": f"Bearer {USER_KEY}"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("files-gw"), config=CONFIG)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files-small")


def start_small(workdir: Path) -> Gateway:
    return start_gateway(workdir, config=CONFIG, env={
        "SWITCHYARD_FILES_MAX_BYTES": str(SMALL_MAX), "SWITCHYARD_FILES_BATCH_MAX_BYTES": str(SMALL_BATCH_MAX)})


@pytest.fixture(scope="module")
def small_gw(small_dir: Path) -> Iterator[Gateway]:
    """Small limits, so the 413s need small uploads only."""
    g = start_small(small_dir)
    yield g
    g.stop()


def org_client(gw: Gateway, name: str) -> tuple[OpenAI, str]:
    """A client whose key belongs to a new organisation, and that organisation's id."""
    admin = Admin(gw)
    org = admin.org(f"{name}-{time.time_ns()}")
    client = gw.client(key=admin.key(org["id"], name=name))
    deadline = time.monotonic() + 10
    while True:  # every worker learns of a new key within a second
        try:
            client.files.list(limit=1)
            return client, org["id"]
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def db_row(gw: Gateway, file_id: str) -> sqlite3.Row | None:
    conn = sqlite3.connect(gw.data_dir / "switchyard.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
    finally:
        conn.close()


def blob_path(gw: Gateway, org_id: str, file_id: str) -> Path:
    return gw.data_dir / "files" / org_id / file_id


def validated(raw: Any) -> FileObject:
    """The JSON the server sent, validated strictly by the SDK's own type."""
    body = raw.http_response.json()
    obj = FileObject.model_validate(body)
    # `expires_at` only when the file expires: OpenAI's spec types it as a non-null integer.
    assert set(body) - {"expires_at"} == {"id", "object", "bytes", "created_at", "filename", "purpose", "status"}
    assert ("expires_at" in body) == (obj.expires_at is not None)
    assert FILE_ID.match(obj.id), obj.id
    assert obj.object == "file" and obj.status == "processed" and obj.status_details is None
    return obj


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def multipart_post(gw: Gateway, fields: dict[str, str], file: tuple[str, bytes] | None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
    files = {"file": file} if file is not None else None
    return httpx.post(gw.base_url + "/files", data=fields, files=files,
                      headers={**AUTH, **(headers or {})}, timeout=60)


def assert_error(resp: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param, err
    return err


def leftovers(gw: Gateway) -> list[Path]:
    root = gw.data_dir / "files"
    return list(root.rglob("*.part")) if root.exists() else []


# ---------------------------------------------------------------- round trips


def test_batch_file_round_trip(gw: Gateway) -> None:
    client, org_id = org_client(gw, "roundtrip")
    data = b"".join(b'{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{}}\n' % i
                    for i in range(100))
    before = int(time.time())
    obj = validated(client.files.with_raw_response.create(file=("requests.jsonl", data), purpose="batch"))
    assert obj.bytes == len(data) and obj.filename == "requests.jsonl" and obj.purpose == "batch"
    assert before - 1 <= obj.created_at <= time.time() + 1
    assert obj.expires_at == obj.created_at + 30 * 24 * 3600  # OpenAI's default for batch inputs

    assert validated(client.files.with_raw_response.retrieve(obj.id)).model_dump() == obj.model_dump()
    content = client.files.content(obj.id)
    assert content.read() == data
    assert content.response.headers["content-type"] == "application/jsonl"

    row = db_row(gw, obj.id)
    assert row is not None and row["org_id"] == org_id and row["sha256"] == hashlib.sha256(data).hexdigest()
    assert row["bytes"] == len(data)
    assert blob_path(gw, org_id, obj.id).read_bytes() == data


def test_large_binary_round_trip_from_disk(gw: Gateway, tmp_path: Path) -> None:
    data = os.urandom(20 * 1024 * 1024 + 7)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    client = gw.client()
    with open(path, "rb") as f:
        obj = validated(client.files.with_raw_response.create(file=f, purpose="user_data"))
    assert obj.bytes == len(data) and obj.filename == "blob.bin" and obj.expires_at is None
    content = client.files.content(obj.id)
    assert content.response.headers["content-type"] == "application/octet-stream"
    assert content.response.headers["content-length"] == str(len(data))
    assert content.read() == data
    row = db_row(gw, obj.id)
    assert row is not None and row["sha256"] == hashlib.sha256(data).hexdigest()
    assert leftovers(gw) == []


def test_vision_accepts_images_and_refuses_the_rest(gw: Gateway) -> None:
    client = gw.client()
    png = png_bytes()
    obj = validated(client.files.with_raw_response.create(file=("cat.png", png, "image/png"), purpose="vision"))
    content = client.files.content(obj.id)
    assert content.read() == png and content.response.headers["content-type"] == "image/png"
    # The type comes from the bytes, not from the name or the declared content type.
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4)).save(jpeg, format="JPEG")
    assert client.files.create(file=("photo", jpeg.getvalue()), purpose="vision").bytes == len(jpeg.getvalue())
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("fake.png", b"not an image at all", "image/png"), purpose="vision")
    assert exc.value.status_code == 400 and exc.value.param == "file"
    assert leftovers(gw) == []


def test_other_purposes_and_expires_after(gw: Gateway) -> None:
    client = gw.client()
    for purpose in ("assistants", "fine-tune", "user_data"):
        obj = client.files.create(file=("notes.txt", b"hello"), purpose=purpose)  # type: ignore[arg-type]
        assert obj.purpose == purpose and obj.expires_at is None
    resp = multipart_post(gw, {"purpose": "evals"}, ("evals.jsonl", b"{}\n"))
    assert resp.status_code == 200 and resp.json()["purpose"] == "evals"
    obj = client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch",
                              expires_after={"anchor": "created_at", "seconds": 3600})
    assert obj.expires_at == obj.created_at + 3600
    # The file part before the form fields works too (the bytes are checked after the fact).
    resp = httpx.post(gw.base_url + "/files", headers=AUTH, timeout=30, files=[
        ("file", ("late.jsonl", b'{"x":1}\n')), ("purpose", (None, b"batch"))])
    assert resp.status_code == 200, resp.text
    assert FileObject.model_validate(resp.json()).purpose == "batch"


# ---------------------------------------------------------------- errors


def test_upload_errors_are_openai_shaped_400s(gw: Gateway) -> None:
    client = gw.client()
    assert_error(multipart_post(gw, {}, ("a.jsonl", b"{}\n")), 400, "purpose")
    assert_error(multipart_post(gw, {"purpose": "batch"}, None), 400, "file")  # form-urlencoded
    resp = httpx.post(gw.base_url + "/files", files={"purpose": (None, b"batch")}, headers=AUTH)
    assert resp.request.headers["content-type"].startswith("multipart/form-data")
    assert_error(resp, 400, "file")
    assert_error(multipart_post(gw, {"purpose": "nonsense"}, ("a.jsonl", b"{}\n")), 400, "purpose")
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="nonsense")  # type: ignore[arg-type]
    assert exc.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="batch")
    assert exc.value.param == "file" and ".jsonl" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 60})
    assert exc.value.param == "expires_after.seconds"
    assert_error(multipart_post(gw, {"purpose": "user_data"}, ("empty.txt", b"")), 400, "file")
    resp = httpx.post(gw.base_url + "/files", json={"purpose": "batch"}, headers=AUTH)
    assert_error(resp, 400, "file")
    resp = httpx.post(gw.base_url + "/files", content=b"--x\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nba",
                      headers={**AUTH, "content-type": "multipart/form-data; boundary=x"})
    assert_error(resp, 400, None)
    resp = multipart_post(gw, {"purpose": "batch"}, ("a.jsonl", b"{}\n"), headers={"Authorization": "Bearer sk-wrong"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
    assert_error(httpx.get(gw.base_url + "/files", params={"limit": 0}, headers=AUTH), 400, "limit")
    assert_error(httpx.get(gw.base_url + "/files", params={"order": "up"}, headers=AUTH), 400, "order")
    assert leftovers(gw) == []


def test_unknown_file_is_404_everywhere(gw: Gateway) -> None:
    client = gw.client()
    missing = "file-" + "0" * 24
    for call in (client.files.retrieve, client.files.delete, lambda i: client.files.content(i).read()):
        with pytest.raises(openai.NotFoundError) as exc:
            call(missing)
        assert exc.value.body == {"message": f"No such File object: {missing}", "type": "invalid_request_error",
                                  "param": "id", "code": None}


# ---------------------------------------------------------------- listing and ownership


def test_list_pages_and_filters(gw: Gateway) -> None:
    client, _ = org_client(gw, "lister")
    ids = []
    for i in range(5):
        purpose = "batch" if i % 2 == 0 else "user_data"
        name = f"f{i}.jsonl" if purpose == "batch" else f"f{i}.txt"
        ids.append(client.files.create(file=(name, b"{}\n"), purpose=purpose).id)  # type: ignore[arg-type]
    newest_first = list(reversed(ids))

    raw = client.files.with_raw_response.list(limit=2)
    body = raw.http_response.json()
    assert body["object"] == "list" and body["has_more"] is True
    assert [f["id"] for f in body["data"]] == newest_first[:2]
    assert body["first_id"] == newest_first[0] and body["last_id"] == newest_first[1]
    for f in body["data"]:
        FileObject.model_validate(f)

    assert [f.id for f in client.files.list(limit=2)] == newest_first  # auto-paging through 3 pages
    assert [f.id for f in client.files.list()] == newest_first
    assert [f.id for f in client.files.list(order="asc", limit=3)] == ids
    assert [f.id for f in client.files.list(purpose="batch")] == newest_first[::2]
    page = client.files.list(after=newest_first[1], limit=10)
    assert [f.id for f in page.data] == newest_first[2:] and page.has_more is False

    # A cursor stays valid after its file is deleted.
    client.files.delete(newest_first[1])
    assert [f.id for f in client.files.list(after=newest_first[1])] == newest_first[2:]
    empty = client.files.with_raw_response.list(purpose="vision").http_response.json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_organisations_see_only_their_own_files(gw: Gateway) -> None:
    alice, alice_org = org_client(gw, "alice")
    bob, _ = org_client(gw, "bob")
    secret = alice.files.create(file=("secret.jsonl", b'{"s":1}\n'), purpose="batch")
    mine = bob.files.create(file=("mine.jsonl", b'{"b":1}\n'), purpose="batch")

    for call in (bob.files.retrieve, bob.files.delete, lambda i: bob.files.content(i).read()):
        with pytest.raises(openai.NotFoundError) as exc:
            call(secret.id)
        assert exc.value.body == {"message": f"No such File object: {secret.id}", "type": "invalid_request_error",
                                  "param": "id", "code": None}
    assert [f.id for f in bob.files.list()] == [mine.id]
    assert [f.id for f in alice.files.list()] == [secret.id]
    # Another organisation's id is not a usable cursor either: it just names a point in time.
    assert [f.id for f in bob.files.list(after=secret.id, order="asc")] == [mine.id]
    # Bob's failed delete left Alice's file whole.
    assert alice.files.content(secret.id).read() == b'{"s":1}\n'
    assert blob_path(gw, alice_org, secret.id).exists()


def test_delete_removes_row_and_bytes(gw: Gateway) -> None:
    client, org_id = org_client(gw, "deleter")
    obj = client.files.create(file=("gone.jsonl", b'{"a":1}\n'), purpose="batch")
    path = blob_path(gw, org_id, obj.id)
    assert path.exists()
    raw = client.files.with_raw_response.delete(obj.id)
    assert raw.http_response.json() == {"id": obj.id, "object": "file", "deleted": True}
    deleted = FileDeleted.model_validate(raw.http_response.json())
    assert deleted.deleted is True
    assert not path.exists() and db_row(gw, obj.id) is None
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(obj.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(obj.id)
    assert obj.id not in [f.id for f in client.files.list()]


def test_expired_files_are_gone_and_their_bytes_removed(gw: Gateway) -> None:
    client, org_id = org_client(gw, "expirer")
    keep = client.files.create(file=("keep.jsonl", b"{}\n"), purpose="batch")
    old = client.files.create(file=("old.jsonl", b"{}\n"), purpose="batch",
                              expires_after={"anchor": "created_at", "seconds": 3600})
    assert old.expires_at == old.created_at + 3600
    # An hour is the shortest expiry the API allows: move the deadline into the past instead.
    conn = sqlite3.connect(gw.data_dir / "switchyard.db")
    with conn:
        conn.execute("UPDATE files SET expires_at = ? WHERE id = ?", (int(time.time() * 1000) - 1, old.id))
    conn.close()
    assert [f.id for f in client.files.list()] == [keep.id]
    for call in (client.files.retrieve, lambda i: client.files.content(i).read(), client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(old.id)
    assert db_row(gw, old.id) is None and not blob_path(gw, org_id, old.id).exists()
    assert client.files.retrieve(keep.id).id == keep.id


# ---------------------------------------------------------------- limits and restarts


def test_oversized_uploads_are_413(small_gw: Gateway) -> None:
    client = small_gw.client()
    with pytest.raises(openai.APIStatusError) as exc:
        client.files.create(file=("big.bin", b"x" * (SMALL_MAX + 1)), purpose="user_data")
    assert exc.value.status_code == 413 and exc.value.param == "file" and str(SMALL_MAX) in exc.value.message
    # Batch inputs have their own, smaller limit.
    with pytest.raises(openai.APIStatusError) as exc:
        client.files.create(file=("big.jsonl", b"{}\n" * (SMALL_BATCH_MAX // 3 + 1)), purpose="batch")
    assert exc.value.status_code == 413 and str(SMALL_BATCH_MAX) in exc.value.message
    ok = client.files.create(file=("fits.bin", b"y" * SMALL_MAX), purpose="user_data")
    assert ok.bytes == SMALL_MAX
    assert leftovers(small_gw) == []


def _chunked_upload(purpose: str, filename: str, size: int, boundary: str = "sy-test-boundary") -> Iterator[bytes]:
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    sent = 0
    while sent < size:
        n = min(64 * 1024, size - sent)
        yield b"z" * n
        sent += n
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize("purpose,filename,size,limit", [
    ("user_data", "big.bin", 3 * SMALL_MAX, SMALL_MAX),
    ("batch", "big.jsonl", SMALL_MAX // 2, SMALL_BATCH_MAX),
])
def test_limit_holds_without_content_length(small_gw: Gateway, purpose: str, filename: str, size: int,
                                            limit: int) -> None:
    # A generator body goes out chunked: no Content-Length to refuse it by, so the stream is counted.
    resp = httpx.post(small_gw.base_url + "/files", content=_chunked_upload(purpose, filename, size), timeout=60,
                      headers={**AUTH, "content-type": "multipart/form-data; boundary=sy-test-boundary"})
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    err = assert_error(resp, 413, "file")
    assert str(limit) in err["message"]
    assert leftovers(small_gw) == []


def test_announced_oversize_is_refused_at_once(small_gw: Gateway) -> None:
    # A raw socket: the answer must come before the (never sent) body.
    host, port = small_gw.root.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall((f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {USER_KEY}\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\n"
                      f"Content-Length: {10 * SMALL_MAX}\r\n\r\n--b\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert orjson.loads(body)["error"]["param"] == "file"


def test_files_survive_a_restart(small_gw: Gateway, small_dir: Path) -> None:
    client = small_gw.client(key=MASTER_KEY)
    data = os.urandom(200_000)
    obj = client.files.create(file=("keep.bin", data), purpose="user_data")
    small_gw.stop()
    again = start_small(small_dir)
    try:
        client = again.client(key=MASTER_KEY)
        assert client.files.retrieve(obj.id).model_dump() == obj.model_dump()
        assert client.files.content(obj.id).read() == data
        assert obj.id in [f.id for f in client.files.list()]
    finally:
        again.stop()
