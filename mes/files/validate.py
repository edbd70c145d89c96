"""What a G-code upload must look like before anything is stored."""

from __future__ import annotations

BGCODE_MAGIC = b"GCDE"
ALLOWED_SUFFIXES = (".gcode", ".bgcode")
MAX_NAME = 255
# How much of a file's start decides whether it is text.
HEAD_SAMPLE = 64 * 1024


class BadUpload(ValueError):
    """The upload is refused; `field` names what is wrong."""

    def __init__(self, code: str, message: str, field: str = "file", status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status


def check_name(name: str) -> str:
    """A plain file name with a G-code suffix, or BadUpload."""
    if not name or len(name) > MAX_NAME:
        raise BadUpload("invalid_file_name", f"the file name must have 1-{MAX_NAME} characters")
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadUpload("invalid_file_name",
                        "the file name may not contain path separators or control characters")
    if name in (".", "..") or not name.lower().endswith(ALLOWED_SUFFIXES):
        raise BadUpload("invalid_file_type", "only .gcode and .bgcode files are accepted")
    return name


def check_size(size: int, max_bytes: int) -> None:
    """Refuse an empty file or one larger than `max_bytes`."""
    if size == 0:
        raise BadUpload("empty_file", "the file is empty")
    if size > max_bytes:
        raise BadUpload("file_too_large", f"the file is larger than {max_bytes // 2**20} MB",
                        status=413)


def check_head(name: str, head: bytes) -> None:
    """Refuse binary-as-text and malformed binary G-code, judged by the file's first bytes."""
    if name.lower().endswith(".bgcode"):
        if not head.startswith(BGCODE_MAGIC):
            raise BadUpload("invalid_bgcode", "a .bgcode file must start with the GCDE header")
        return
    sample = head[:HEAD_SAMPLE]
    if b"\x00" in sample:
        raise BadUpload("not_text", "a .gcode file must be text; this one contains binary data")
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # a multi-byte character cut at the sample's end is fine
            raise BadUpload("not_text", "a .gcode file must be UTF-8 or ASCII text") from None
