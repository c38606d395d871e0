"""[nat]: masquerading of tunnel traffic toward the outside."""

import attrs

from trivpn.config.checks import check_egress
from trivpn.config.fields import checked


@attrs.frozen(kw_only=True)
class NatConfig:
    masquerade: bool = True
    egress: str = attrs.field(default="auto", metadata=checked(check_egress))
