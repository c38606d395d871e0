"""`--log-format json`: one JSON object per line, for log collectors.

Each line has ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and ``message``
(the %-arguments already applied), then every ``extra=`` field of the call, and
``exception`` / ``stack`` as text when the record carries them. An extra field named like one
of the fixed keys is kept as ``extra.<name>``; values JSON cannot hold are written as str().
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Final

# Attributes every LogRecord has: whatever else a record carries came from `extra=`.
_RECORD_ATTRIBUTES: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_FIXED: Final = ("time", "level", "logger", "message", "exception", "stack")


class JsonFormatter(logging.Formatter):
    """A Formatter whose every record becomes one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": self.iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["exception"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            fields[f"extra.{key}" if key in _FIXED else key] = value
        return json.dumps(fields, default=str, ensure_ascii=False)

    @staticmethod
    def iso_time(created: float) -> str:
        moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
