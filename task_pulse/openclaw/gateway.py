"""Where the running OpenClaw gateway is and how to sign in to it, found the way OpenClaw's own clients find
it (checked in OpenClaw 2026.9.6: `resolveConfigPath`, `resolveGatewayPort`, `resolveGatewayCredentialsFromConfig`).
Pure reading of files and the environment: no connection (the daemon's gateway client makes that), and
nothing a writer call imports.

* Home: `OPENCLAW_HOME`, else `HOME`. State dir: `OPENCLAW_STATE_DIR`, else `~/.openclaw` (`~/.openclaw-NAME`
  for a profile: `--profile NAME` or `OPENCLAW_PROFILE`). Config: `OPENCLAW_CONFIG_PATH`, else
  `openclaw.json` in the state dir; JSON5 (comments, trailing commas).
* OpenClaw's trusted env files fill in what the environment does not set: `.env` beside the config, and for
  the default state dir `~/.config/openclaw/gateway.env`.
* The URL: `OPENCLAW_GATEWAY_URL`; else `gateway.remote.url` when `gateway.mode` is `remote`; else the local
  gateway `ws://127.0.0.1:PORT` (`wss://` with `gateway.tls.enabled`), whatever it binds to. PORT:
  `OPENCLAW_GATEWAY_PORT`, `gateway.port`, a profile's own port (20000 + FNV-1a of its name % 40000), 18789.
* The secret, by `gateway.auth.mode` (unset: the token when there is one): with a URL given from outside,
  only `OPENCLAW_GATEWAY_TOKEN` / `_PASSWORD`; locally the config first (`gateway.auth.token`, then the
  environment, then `gateway.remote.token`); for a remote gateway `gateway.remote.*` first. A value is a
  literal, `${NAME}` or `$NAME`, or a SecretRef of source `env` or `file`. `openclaw config get` prints
  such values redacted, so they are read here from the file itself.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PORT = 18789
CONFIG_NAME = "openclaw.json"
_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]{0,127})\}|\$([A-Z][A-Z0-9_]{0,127})")


class GatewayConfigError(Exception):
    """The config names a gateway we cannot use as given (a file that does not parse, say)."""


@dataclass(frozen=True)
class GatewaySettings:
    url: str
    token: str | None = None
    password: str | None = None
    found_in: str = ""  # where the URL came from, for messages
    secret_note: str | None = None  # why there is no token or password, when there is none


def home(env: Mapping[str, str]) -> Path:
    return Path(env.get("OPENCLAW_HOME") or env.get("HOME") or os.path.expanduser("~"))


def _expand(path: str, env: Mapping[str, str]) -> Path:
    return home(env) / path[2:] if path.startswith("~/") else Path(path)


def profile_of(env: Mapping[str, str], profile: str | None = None) -> str | None:
    return profile or env.get("OPENCLAW_PROFILE") or None


def state_dir(env: Mapping[str, str] = os.environ, profile: str | None = None) -> Path:
    if env.get("OPENCLAW_STATE_DIR"):
        return _expand(env["OPENCLAW_STATE_DIR"], env)
    name = profile_of(env, profile)
    return home(env) / (f".openclaw-{name}" if name else ".openclaw")


def config_path(env: Mapping[str, str] = os.environ, profile: str | None = None) -> Path:
    if env.get("OPENCLAW_CONFIG_PATH"):
        return _expand(env["OPENCLAW_CONFIG_PATH"], env)
    return state_dir(env, profile) / CONFIG_NAME


def profile_port(profile: str) -> int:
    """The port OpenClaw gives a named profile's gateway when its config names none."""
    digest = 0x811C9DC5
    for byte in profile.strip().encode():  # FNV-1a (32 bit) over the name's UTF-8
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return 20000 + digest % 40000


def read_config(path: Path) -> dict[str, Any]:
    """The config file as data ({} when there is none); GatewayConfigError when it does not parse."""
    import json5  # JSON5 is OpenClaw's config format; only setup and the daemon pay for the parser

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise GatewayConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json5.loads(text)
    except ValueError as exc:
        raise GatewayConfigError(f"{path} is not valid JSON5: {exc}") from None
    return data if isinstance(data, dict) else {}


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines of a dotenv file (comments and `export ` allowed, quotes removed)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in lines:
        line = line.strip().removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not name or name.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[name.strip()] = value
    return found


def _section(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _secret(value: Any, env: Mapping[str, str], config: dict[str, Any], where: str) -> tuple[str | None, str | None]:
    """A config secret as (value, None), or (None, why it cannot be read here); (None, None) when unset."""
    if value is None or value == "":
        return None, None
    if isinstance(value, str):
        if match := _REFERENCE.fullmatch(value.strip()):
            name = match.group(1) or match.group(2)
            return (env[name], None) if env.get(name) else (None, f"{where} is ${name}, which is not set here")
        return value, None
    if isinstance(value, dict):
        source, ref = value.get("source"), value.get("id")
        if source == "env" and isinstance(ref, str):
            return (env[ref], None) if env.get(ref) else (None, f"{where} comes from ${ref}, which is not set here")
        if source == "file" and isinstance(ref, str):
            return _file_secret(value, ref, env, config, where)
        return None, (f"{where} is a SecretRef of source {source!r}, which task-pulse cannot resolve: put the value "
                      "in OPENCLAW_GATEWAY_TOKEN (or _PASSWORD) in task-pulse's env file")
    return None, f"{where} is neither a string nor a SecretRef"


def _file_secret(ref: dict[str, Any], pointer: str, env: Mapping[str, str], config: dict[str, Any],
                 where: str) -> tuple[str | None, str | None]:
    """A `file` SecretRef: its provider (`secrets.providers.<alias>`) names the file; `id` is `value` (the whole
    file) or a JSON pointer into it."""
    alias = ref.get("provider") or _section(_section(config, "secrets"), "defaults").get("file") or "default"
    provider = _section(_section(_section(config, "secrets"), "providers"), str(alias))
    path = provider.get("path")
    if not isinstance(path, str):
        return None, f"{where} names the file provider {alias!r}, which has no path in secrets.providers"
    try:
        text = _expand(path, env).read_text(encoding="utf-8")
    except OSError as exc:
        return None, f"{where} is in {path}, which cannot be read ({exc.strerror})"
    if pointer == "value":
        return text.strip(), None
    try:
        found: Any = json.loads(text)
        for part in pointer.lstrip("/").split("/"):
            found = found[part.replace("~1", "/").replace("~0", "~")]
    except (ValueError, KeyError, TypeError, IndexError):
        return None, f"{where}: {pointer} is not in {path}"
    return (found, None) if isinstance(found, str) else (None, f"{where}: {pointer} in {path} is not a string")


def find_gateway(env: Mapping[str, str] = os.environ, profile: str | None = None,
                 url: str | None = None) -> GatewaySettings:
    """The gateway OpenClaw's own clients would use here (`url` given: that one, with env credentials)."""
    path = config_path(env, profile)
    config = read_config(path)
    files = read_env_file(path.parent / ".env")
    if not env.get("OPENCLAW_STATE_DIR") and not profile_of(env, profile) and not env.get("OPENCLAW_CONFIG_PATH"):
        files = {**read_env_file(home(env) / ".config" / "openclaw" / "gateway.env"), **files}
    env = {**files, **env}  # the process's own environment wins
    gateway = _section(config, "gateway")
    auth, remote = _section(gateway, "auth"), _section(gateway, "remote")
    is_remote = gateway.get("mode") == "remote"
    if url:
        found_in, override = "--openclaw-gateway", True
    elif env.get("OPENCLAW_GATEWAY_URL"):
        url, found_in, override = env["OPENCLAW_GATEWAY_URL"], "OPENCLAW_GATEWAY_URL", True
    elif is_remote and isinstance(remote.get("url"), str):
        url, found_in, override = remote["url"], f"gateway.remote.url in {path}", False
    else:
        url, found_in = _local_url(env, gateway, profile_of(env, profile), path)
        override = False
    mode = auth.get("mode")

    def pick(kind: str) -> tuple[str | None, str | None]:
        from_env = env.get(f"OPENCLAW_GATEWAY_{kind.upper()}") or None
        if override:
            return from_env, None
        ours = (auth.get(kind), f"gateway.auth.{kind}")
        theirs = (remote.get(kind), f"gateway.remote.{kind}")
        order = [theirs, ("env", ""), ours] if is_remote else [ours, ("env", ""), theirs]
        notes = []
        for value, where in order:
            if value == "env":
                if from_env:
                    return from_env, None
                continue
            secret, note = _secret(value, env, config, where)
            if secret:
                return secret, None
            if note:
                notes.append(note)
        return None, notes[0] if notes else None

    token, token_note = pick("token")
    password, password_note = pick("password")
    if mode in ("password", "trusted-proxy") or (mode is None and token is None and token_note is None and password):
        return GatewaySettings(url, password=password, found_in=found_in, secret_note=password_note)
    if mode == "none":
        return GatewaySettings(url, found_in=found_in)
    note = token_note or (None if token else f"no gateway token: neither OPENCLAW_GATEWAY_TOKEN nor gateway.auth.token "
                                              f"in {path}")
    return GatewaySettings(url, token=token, found_in=found_in, secret_note=note)


def _local_url(env: Mapping[str, str], gateway: dict[str, Any], profile: str | None, path: Path) -> tuple[str, str]:
    raw: Any = env.get("OPENCLAW_GATEWAY_PORT")
    where = "OPENCLAW_GATEWAY_PORT"
    if raw:
        raw = str(raw).rpartition(":")[2]  # it may be host:port
    elif isinstance(gateway.get("port"), int) and gateway["port"] > 0:
        raw, where = gateway["port"], str(path)
    elif profile:
        raw, where = profile_port(profile), f"profile {profile!r}"
    else:
        raw, where = DEFAULT_PORT, "the default port"
    try:
        port = int(raw)
    except (TypeError, ValueError):
        raise GatewayConfigError(f"gateway port {raw!r} (from {where}) is not a number") from None
    scheme = "wss" if _section(gateway, "tls").get("enabled") is True else "ws"
    return f"{scheme}://127.0.0.1:{port}", where
