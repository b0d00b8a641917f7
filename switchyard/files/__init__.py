"""Uploaded files: bytes on disk, metadata in the database, owned per organisation."""

from switchyard.files.blobs import BlobTooLarge, Blobs, StagedBlob
from switchyard.files.registry import (
    UPLOAD_PURPOSES,
    FileRecord,
    FileStore,
    file_object,
    no_such_file,
    sniff_image,
    upload_limit,
)

__all__ = [
    "UPLOAD_PURPOSES",
    "BlobTooLarge",
    "Blobs",
    "FileRecord",
    "FileStore",
    "StagedBlob",
    "file_object",
    "no_such_file",
    "sniff_image",
    "upload_limit",
]
