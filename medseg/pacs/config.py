"""How to talk to an archive: credentials, TLS verification, time-outs, the back-off budget and the
calling AE title, read from the environment and an optional TOML file. Secrets are never shown.

Environment (applies to every archive, wins over the file)::

    MEDSEG_PACS_USERNAME, MEDSEG_PACS_PASSWORD   HTTP basic auth
    MEDSEG_PACS_TOKEN                            HTTP bearer token

Config file (``--pacs-config FILE``), one ``[[archive]]`` table per archive; the first whose
``url`` is a prefix of the address applies::

    [[archive]]
    url = "https://pacs.example.org/dicom-web"
    username = "medseg"
    password_env = "PACS_PASSWORD"     # name of an environment variable; or password = "..."
    ca_bundle = "/etc/ssl/certs/hospital-ca.pem"
    timeout = 30                        # seconds per request
    max_wait = 600                      # seconds to keep retrying an unreachable archive
    calling_aet = "MEDSEG"              # DIMSE: our AE title
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, did_you_mean
from medseg.pacs.address import ArchiveAddress, check_ae_title, parse_address
from medseg.pacs.retry import Backoff

log = logging.getLogger(__name__)

ENV_USERNAME, ENV_PASSWORD, ENV_TOKEN = "MEDSEG_PACS_USERNAME", "MEDSEG_PACS_PASSWORD", "MEDSEG_PACS_TOKEN"
DEFAULT_AET = "MEDSEG"
_TABLE_KEYS = (
    "url",
    "username",
    "password",
    "password_env",
    "token",
    "token_env",
    "verify",
    "ca_bundle",
    "timeout",
    "max_wait",
    "calling_aet",
)


@dataclass(frozen=True)
class Credentials:
    """Basic auth (username + password) or a bearer token, or nothing. Shown only as its kind."""

    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``bearer``, ``basic`` or ``none``."""
        return "bearer" if self.token else "basic" if self.username else "none"

    def __repr__(self) -> str:
        return f"Credentials({self.kind})"

    __str__ = __repr__


@dataclass(frozen=True)
class ArchiveSettings:
    """Everything needed to talk to one archive. ``verify``: verify TLS certificates (default), or a
    CA bundle path; ``timeout``: seconds per request; ``backoff``: how long to wait while unreachable."""

    address: ArchiveAddress
    credentials: Credentials = Credentials()
    verify: bool | str = True
    timeout: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    calling_aet: str = DEFAULT_AET

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ConfigError(f"archive timeout must be positive, got {self.timeout}")


def load_settings(
    address: str | ArchiveAddress,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ArchiveSettings:
    """Settings for ``address`` from the config file's matching table, then the environment, then
    ``overrides`` (``calling_aet``, ``max_wait``, ``verify``: command-line values, None = not given).

    Raises ConfigError for a bad file, an unknown key (with the closest valid one) or a bad value.
    """
    env = os.environ if env is None else env
    parsed = address if isinstance(address, ArchiveAddress) else parse_address(address)
    table = _matching_table(_read_tables(config), parsed) if config else {}
    settings = _from_table(parsed, table, env, config)
    credentials = _env_credentials(env, settings.credentials)
    settings = replace(settings, credentials=credentials)
    given = {k: v for k, v in overrides.items() if v is not None}
    if "max_wait" in given:
        settings = replace(settings, backoff=replace(settings.backoff, max_wait=float(given.pop("max_wait"))))
    if "calling_aet" in given:
        given["calling_aet"] = check_ae_title(given["calling_aet"])
    return replace(settings, **given)


def _read_tables(path: Path) -> list[dict]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"PACS config {path} does not exist; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"PACS config {path} is not valid TOML: {exc}") from None
    tables = data.get("archive", [])
    if set(data) - {"archive"} or not isinstance(tables, list):
        raise ConfigError(
            f"PACS config {path}: write one [[archive]] table per archive (found {', '.join(data) or 'nothing'})"
        )
    for table in tables:
        unknown = [k for k in table if k not in _TABLE_KEYS]
        if unknown:
            raise ConfigError(
                f"PACS config {path}: unknown key {unknown[0]!r}; {did_you_mean(unknown[0], _TABLE_KEYS)}"
                f"valid keys: {', '.join(_TABLE_KEYS)}"
            )
        if "url" not in table:
            raise ConfigError(f'PACS config {path}: every [[archive]] table needs url = "..."')
    if any("password" in t or "token" in t for t in tables):
        _warn_if_readable(Path(path))
    return tables


def _warn_if_readable(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("PACS config %s holds a secret and can be read by other users; chmod 600 it", path)


def _matching_table(tables: list[dict], address: ArchiveAddress) -> dict:
    for table in tables:
        prefix = str(table["url"]).rstrip("/")
        if address.url.lower().startswith(prefix.lower()):
            return table
    return {}


def _from_table(address: ArchiveAddress, table: dict, env: Mapping[str, str], path: Path | None) -> ArchiveSettings:
    where = f"PACS config {path}"
    secret = {
        "username": table.get("username"),
        "password": table.get("password") or _env_value(env, table.get("password_env"), where),
        "token": table.get("token") or _env_value(env, table.get("token_env"), where),
    }
    verify: bool | str = table.get("ca_bundle") or table.get("verify", True)
    if isinstance(verify, str) and not Path(verify).is_file():
        raise ConfigError(f"{where}: CA bundle {verify} does not exist")
    if not isinstance(verify, (bool, str)):
        raise ConfigError(f"{where}: verify must be true or false")
    if verify is False:
        log.warning(
            "TLS certificates of %s are NOT verified (verify = false in %s); use ca_bundle instead", address, path
        )
    backoff = Backoff(max_wait=_number(table, "max_wait", Backoff().max_wait, where))
    aet = check_ae_title(str(table.get("calling_aet", DEFAULT_AET)), f"{where}: calling_aet")
    return ArchiveSettings(address, Credentials(**secret), verify, _number(table, "timeout", 30.0, where), backoff, aet)


def _env_value(env: Mapping[str, str], name: object, where: str) -> str | None:
    if name is None:
        return None
    if str(name) not in env:
        raise ConfigError(f"{where} names the environment variable {name}, which is not set")
    return env[str(name)]


def _number(table: dict, key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where}: {key} must be a non-negative number of seconds, got {value!r}")
    return float(value)


def _env_credentials(env: Mapping[str, str], base: Credentials) -> Credentials:
    token = env.get(ENV_TOKEN) or None
    username = env.get(ENV_USERNAME) or None
    if token:
        return Credentials(token=token)
    if username:
        return Credentials(username=username, password=env.get(ENV_PASSWORD, ""))
    if env.get(ENV_PASSWORD) and not base.username:
        raise ConfigError(f"{ENV_PASSWORD} is set but {ENV_USERNAME} is not; set both for basic auth")
    return base


__all__ = [
    "DEFAULT_AET",
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_USERNAME",
    "ArchiveSettings",
    "Credentials",
    "load_settings",
]
