"""[metrics]: Prometheus metrics over HTTP."""

from typing import Any

import attrs

from trivpn.config.errors import InvalidValue
from trivpn.config.fields import hooked
from trivpn.config.values import Endpoint


def _structure_metrics_listen(value: object, _: Any) -> Endpoint | None:
    """A TCP host:port to serve /metrics on, or None for the empty string (metrics off)."""
    examples = '127.0.0.1:9586 or [::1]:9586; "" turns metrics off'
    if not isinstance(value, str):
        raise InvalidValue(value, f"expected host:port, e.g. {examples}")
    if value == "":
        return None
    try:
        return Endpoint.parse(value)
    except ValueError as e:
        raise InvalidValue(value, f"{e}, e.g. {examples}") from None


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (GET /metrics); off unless ``listen`` is set."""

    listen: Endpoint | None = attrs.field(default=None, metadata=hooked(_structure_metrics_listen))
