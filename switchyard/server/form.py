"""A whole multipart/form-data request for the media endpoints (image edits, audio): small
fields as strings, file parts as bytes, each under its own limit, read as it streams in."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from switchyard.server.multipart import MultipartReader, is_multipart, limited
from switchyard.wire.errors import GatewayError, invalid_request
from switchyard.wire.forms import Form, Upload

MAX_FIELD_BYTES = 64 * 1024  # a prompt of 32,000 characters fits
MAX_FIELDS = 40
FORM_OVERHEAD = 1024 * 1024  # boundaries, part headers and the small fields


def file_too_large(param: str, limit: int) -> GatewayError:
    return GatewayError(413, f"The file in '{param}' is larger than the limit of {limit:,} bytes.", param=param,
                        code="file_too_large")


async def read_form(request: Request, max_file_bytes: int, max_files: int) -> Form:
    """The request's form. Each file part may hold `max_file_bytes`; the body as a whole
    `max_files` of them plus the small fields."""
    if not is_multipart(request.headers.get("content-type")):
        raise invalid_request("This endpoint takes multipart/form-data (a file upload).")
    total = max_file_bytes * max_files + FORM_OVERHEAD
    form = Form()
    count = 0
    try:
        reader = MultipartReader(request.headers["content-type"],
                                 limited(request.stream(), total, file_too_large("file", max_file_bytes)))
        while (part := await reader.next_part()) is not None:
            count += 1
            if count > MAX_FIELDS + max_files:
                raise invalid_request(f"Too many form fields: at most {MAX_FIELDS + max_files}.")
            if part.filename is None:
                value = await reader.read(MAX_FIELD_BYTES, part.name)
                form.fields.setdefault(part.name, []).append(value.decode("utf-8", "replace"))
                continue
            if sum(len(v) for v in form.files.values()) >= max_files:
                raise invalid_request(f"Too many files: at most {max_files} in one request.", param=part.name[:100])
            data = bytearray()
            async for chunk in reader.chunks():
                data += chunk
                if len(data) > max_file_bytes:
                    raise file_too_large(part.name.removesuffix("[]")[:100], max_file_bytes)
            form.files.setdefault(part.name, []).append(Upload(part.name, part.filename, bytes(data)))
    except ClientDisconnect:
        raise invalid_request("The client disconnected before its request body arrived.",
                              code="client_disconnected") from None
    return form
