"""The recorded provider exchanges in ../shared/fixtures (txtar files), served by the fake upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_upstream import RawReply

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
CHAT_FIXTURES = FIXTURES / "openai" / "chatcompletions"
ANTHROPIC_FIXTURES = FIXTURES / "anthropic"
RESPONSES_FIXTURES = FIXTURES / "openai" / "responses"

needs_fixtures = pytest.mark.skipif(
    not CHAT_FIXTURES.is_dir(),
    reason=f"recorded fixtures not present at {FIXTURES} (they sit beside the repository, not in it)",
)


needs_anthropic_fixtures = pytest.mark.skipif(
    not ANTHROPIC_FIXTURES.is_dir(),
    reason=f"recorded fixtures not present at {ANTHROPIC_FIXTURES} (they sit beside the repository, not in it)",
)

needs_responses_fixtures = pytest.mark.skipif(
    not RESPONSES_FIXTURES.is_dir(),
    reason=f"recorded fixtures not present at {RESPONSES_FIXTURES} (they sit beside the repository, not in it)",
)


def read_txtar(path: Path) -> dict[str, bytes]:
    sections: dict[str, bytes] = {}
    name = None
    for line in path.read_bytes().splitlines(keepends=True):
        if line.startswith(b"-- ") and line.rstrip().endswith(b" --"):
            name = line.strip()[3:-3].decode()
            sections[name] = b""
        elif name is not None:
            sections[name] += line
    return sections


def as_reply(section: bytes, content_type: str) -> RawReply:
    """A section as an HTTP answer: an ``HTTP/x status`` head with headers, or a 200 body as recorded."""
    if not section.startswith(b"HTTP/"):
        return RawReply(200, section.strip() + b"\n", headers={"Content-Type": content_type})
    head, _, body = section.partition(b"\n\n")
    lines = head.decode().splitlines()
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers.pop("Content-Length", None)
    return RawReply(status, body.strip(), headers=headers)


def sse_events(raw: bytes) -> list[bytes]:
    return [line[len(b"data: ") :] for line in raw.split(b"\n") if line.startswith(b"data: ")]
