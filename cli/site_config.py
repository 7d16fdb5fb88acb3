"""A site's sync settings: ``salesmgr.toml`` beside the pipeline file, or ``--config PATH``.

With it, ``salesmgr sync FILE`` alone reaches the right device::

    [sync]
    url = "tcps://192.168.1.20:7420"   # the device (any registered transport's URL)
    policy = "field-merge"             # --policy
    timeout = 30                       # seconds for every read (--timeout)
    secret-env = "SALESMGR_SECRET"     # the environment variable holding the pairing secret

    [sync.options]                     # handed to the transport plugin as they are
    tls-ca = "device-ca.pem"           # paths are relative to this file
    baud = 115200

The secret itself never goes in the file.  The command line wins over the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from salesmgr.errors import ConfigError
from salesmgr.sync.wire import auth

CONFIG_NAME = "salesmgr.toml"
SECRET_ENV = "SALESMGR_SECRET"
SYNC_KEYS = {"url", "policy", "timeout", "secret-env", "options"}
PATH_OPTIONS = {"tls-ca", "tls-cert", "tls-key"}  # resolved relative to the config file


@dataclass
class SiteConfig:
    path: Path | None = None
    url: str | None = None
    policy: str | None = None
    timeout: float | None = None
    secret_env: str = SECRET_ENV
    options: dict[str, Any] = field(default_factory=dict)  # transport options, snake_case keys


def find_site_config(
    pipeline: str | os.PathLike[str], explicit: str | os.PathLike[str] | None = None
) -> SiteConfig:
    """The config given with ``--config``, else ``salesmgr.toml`` beside ``pipeline``, else none."""
    if explicit is not None:
        return read_site_config(Path(explicit))
    beside = Path(pipeline).resolve().parent / CONFIG_NAME
    if beside.is_file():
        return read_site_config(beside)
    return SiteConfig()


def read_site_config(path: Path) -> SiteConfig:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as problem:
        raise ConfigError(f"{path}: cannot read ({problem.strerror or problem})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as problem:
        raise ConfigError(f"{path}: not valid TOML ({problem})") from None
    sync = data.get("sync", {})
    if not isinstance(sync, dict):
        raise ConfigError(f"{path}: [sync] must be a table")
    unknown = set(sync) - SYNC_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown [sync] setting {sorted(unknown)[0]!r} "
            f"(known: {', '.join(sorted(SYNC_KEYS))})"
        )
    config = SiteConfig(path=path)
    config.url = _text(path, sync, "url")
    config.policy = _text(path, sync, "policy")
    config.secret_env = _text(path, sync, "secret-env") or SECRET_ENV
    if "timeout" in sync:
        timeout = sync["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"{path}: [sync] timeout must be a positive number of seconds")
        config.timeout = float(timeout)
    options = sync.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: [sync.options] must be a table")
    for key, value in options.items():
        if key in PATH_OPTIONS and isinstance(value, str):
            value = str((path.parent / value).resolve())
        config.options[key.replace("-", "_")] = value
    return config


def _text(path: Path, table: dict[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{path}: [sync] {key} must be a non-empty string")
    return value


def resolve_secret(given: str | None, config: SiteConfig | None = None) -> str:
    """The pairing secret: ``--secret``, else the environment variable the config names;
    ConfigError when there is none, or when it is too weak (`auth.check_strength`)."""
    if given:
        return auth.check_strength(given)
    env = config.secret_env if config else SECRET_ENV
    found = os.environ.get(env)
    if found:
        return auth.check_strength(found)
    raise ConfigError(
        f"no pairing secret: give --secret or set {env} (both ends need the same secret)"
    )
