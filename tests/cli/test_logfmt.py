"""`--log-format json`: one JSON object per line with the record's fields and extras."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from trivpn.cli.logfmt import JsonFormatter
from trivpn.cli.main import _setup_logging


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("trivpn.test_logfmt")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, out
    log.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_fields_and_arguments_applied(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    log.warning("peer %s: %d bytes", "alice", 42)
    (line,) = lines(out)
    assert line["level"] == "WARNING"
    assert line["logger"] == "trivpn.test_logfmt"
    assert line["message"] == "peer alice: 42 bytes"
    assert isinstance(line["time"], str) and line["time"].endswith("Z")
    assert set(line) == {"time", "level", "logger", "message"}


def test_one_line_even_for_multiline_messages_and_exceptions(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("two\nlines")
    assert out.getvalue().count("\n") == 1
    (line,) = lines(out)
    assert line["message"] == "two\nlines"
    assert "ValueError: bad" in str(line["exception"])


def test_extra_fields_are_kept(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    log.info("hello", extra={"peer": "alice", "rx": 5, "level": "clash", "obj": object()})
    (line,) = lines(out)
    assert (line["peer"], line["rx"]) == ("alice", 5)
    assert line["level"] == "INFO" and line["extra.level"] == "clash"
    assert str(line["obj"]).startswith("<object object")


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert JsonFormatter.iso_time(0.25) == "1970-01-01T00:00:00.250Z"


def test_cli_log_format_json_installs_the_formatter() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        _setup_logging("info", "json")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        root.handlers.clear()
        _setup_logging("info", "human")
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved
