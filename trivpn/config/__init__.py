"""trivpn's configuration: a TOML file structured by cattrs into frozen attrs classes.

Every problem becomes one line ``<key path>: <bad value> — <what is allowed>``, and one file
reports as many of them as it can at once, so checks come in three tiers:

- value checks (types, address syntax, ranges) run per key while cattrs structures, so each bad
  key is reported whatever else is wrong (`values` structures, `checks` checks);
- section checks relate the keys of one section; they run once that section's keys are valid;
- cross-section checks run once every section is valid (`root`).

Modules: `errors` (what goes wrong), `values` (value types, structure hooks, field metadata),
`checks` (shared value checks, overlap rules), `sections` (the small sections), `wireguard`,
`root` (the whole `Config`), `files` (keys naming files), `loader` (TOML in, problem lines out).

To add a section: an attrs class whose fields all have defaults (value checks in field metadata
via `values.checked`), a field on `Config`, and its section check in ``loader._SECTION_CHECKS``.
Classes that are list items (``[[wireguard.peers]]``) may have required fields: a missing one is
reported as ``(not set) — required``. Keys whose meaning needs more than one key and the file
system (the WireGuard private key) are read by a loader from `files` in ``loader._LOADERS``
before cattrs runs.
"""

from trivpn.config.checks import find_duplicates, find_overlaps
from trivpn.config.errors import ConfigError, InvalidValue, Problems
from trivpn.config.files import Loaded, write_private_file
from trivpn.config.loader import default_config, load_config, parse_config
from trivpn.config.root import Config
from trivpn.config.sections import (
    DEFAULT_STATE_DIR,
    PLACEHOLDER_SECRET,
    InterfaceConfig,
    MetricsConfig,
    NatConfig,
    StateConfig,
    ToyVpnConfig,
    WebConfig,
)
from trivpn.config.values import (
    Endpoint,
    Hook,
    IPAddress,
    IPInterface,
    IPNetwork,
    PublicEndpoint,
    by_version,
)
from trivpn.config.wireguard import DEFAULT_PRIVATE_KEY_FILE, WireGuardConfig, WireGuardPeerConfig
from trivpn.proto.peer_fields import PEER_NAME, PEER_NAME_ALLOWED

__all__ = [
    "DEFAULT_PRIVATE_KEY_FILE",
    "DEFAULT_STATE_DIR",
    "PEER_NAME",
    "PEER_NAME_ALLOWED",
    "PLACEHOLDER_SECRET",
    "Config",
    "ConfigError",
    "Endpoint",
    "Hook",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "InterfaceConfig",
    "InvalidValue",
    "Loaded",
    "MetricsConfig",
    "NatConfig",
    "Problems",
    "PublicEndpoint",
    "StateConfig",
    "ToyVpnConfig",
    "WebConfig",
    "WireGuardConfig",
    "WireGuardPeerConfig",
    "by_version",
    "default_config",
    "find_duplicates",
    "find_overlaps",
    "load_config",
    "parse_config",
    "write_private_file",
]
