"""Finding the OpenClaw gateway as OpenClaw's own clients do (task_pulse/openclaw/gateway.py): the precedence
rules read in OpenClaw 2026.9.6, on config files and environments the tests make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from task_pulse.openclaw.gateway import GatewayConfigError, find_gateway, profile_port


def write_config(home: Path, text: str, name: str = ".openclaw") -> Path:
    path = home / name / "openclaw.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_local_gateway_from_a_json5_config_with_its_token(tmp_path: Path) -> None:
    write_config(tmp_path, "{\n  // comments and trailing commas: JSON5\n"
                           "  gateway: {port: 18899, auth: {token: 't0k',},},\n}")
    found = find_gateway({"HOME": str(tmp_path)})
    assert (found.url, found.token, found.password, found.secret_note) == ("ws://127.0.0.1:18899", "t0k", None, None)


def test_defaults_without_a_config_and_the_reason_there_is_no_token(tmp_path: Path) -> None:
    found = find_gateway({"HOME": str(tmp_path)})
    assert found.url == "ws://127.0.0.1:18789" and found.token is None
    assert found.secret_note is not None and "no gateway token" in found.secret_note


def test_the_config_token_wins_locally_and_the_env_fills_in(tmp_path: Path) -> None:
    write_config(tmp_path, json.dumps({"gateway": {"auth": {"token": "from-config"}}}))
    assert find_gateway({"HOME": str(tmp_path), "OPENCLAW_GATEWAY_TOKEN": "from-env"}).token == "from-config"
    write_config(tmp_path, json.dumps({"gateway": {}}))
    assert find_gateway({"HOME": str(tmp_path), "OPENCLAW_GATEWAY_TOKEN": "from-env"}).token == "from-env"


def test_a_url_from_outside_takes_env_credentials_only(tmp_path: Path) -> None:
    write_config(tmp_path, json.dumps({"gateway": {"port": 1, "auth": {"token": "from-config"}}}))
    env = {"HOME": str(tmp_path), "OPENCLAW_GATEWAY_URL": "ws://10.0.0.5:9000"}
    found = find_gateway(env)
    assert (found.url, found.token, found.found_in) == ("ws://10.0.0.5:9000", None, "OPENCLAW_GATEWAY_URL")
    assert find_gateway({**env, "OPENCLAW_GATEWAY_TOKEN": "e"}).token == "e"
    assert find_gateway(env, url="ws://127.0.0.1:7").url == "ws://127.0.0.1:7"


def test_port_precedence_tls_and_a_profiles_own_port(tmp_path: Path) -> None:
    write_config(tmp_path, json.dumps({"gateway": {"port": 2000, "tls": {"enabled": True}}}))
    env = {"HOME": str(tmp_path)}
    assert find_gateway(env).url == "wss://127.0.0.1:2000"
    assert find_gateway({**env, "OPENCLAW_GATEWAY_PORT": "127.0.0.1:3000"}).url == "wss://127.0.0.1:3000"
    assert profile_port("foo") == 47223  # as OpenClaw 2026.9.6 derives it (seen)
    write_config(tmp_path, "{}", name=".openclaw-foo")
    assert find_gateway(env, profile="foo").url == "ws://127.0.0.1:47223"
    with pytest.raises(GatewayConfigError, match="port 'x'"):
        find_gateway({**env, "OPENCLAW_GATEWAY_PORT": "x"})


def test_state_dir_config_path_and_the_env_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state).mkdir()
    (state / "openclaw.json").write_text(json.dumps({"gateway": {"port": 4000}}))
    (state / ".env").write_text("# OpenClaw's own env file\nexport OPENCLAW_GATEWAY_TOKEN='from-dotenv'\n")
    found = find_gateway({"HOME": str(tmp_path), "OPENCLAW_STATE_DIR": str(state)})
    assert (found.url, found.token) == ("ws://127.0.0.1:4000", "from-dotenv")
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"gateway": {"port": 5000}}))
    assert find_gateway({"HOME": str(tmp_path), "OPENCLAW_CONFIG_PATH": str(other)}).url == "ws://127.0.0.1:5000"
    gateway_env = tmp_path / ".config" / "openclaw" / "gateway.env"
    gateway_env.parent.mkdir(parents=True)
    gateway_env.write_text("OPENCLAW_GATEWAY_TOKEN=from-gateway-env\n")
    assert find_gateway({"HOME": str(tmp_path)}).token == "from-gateway-env"


def test_secret_forms_env_references_and_secretrefs(tmp_path: Path) -> None:
    secret_file = tmp_path / "secrets.json"
    secret_file.write_text(json.dumps({"gateway": {"token": "from-file"}}))
    env = {"HOME": str(tmp_path), "GW_TOKEN": "from-var"}
    for token, expected in (("${GW_TOKEN}", "from-var"), ("$GW_TOKEN", "from-var"),
                            ({"source": "env", "provider": "default", "id": "GW_TOKEN"}, "from-var"),
                            ({"source": "file", "provider": "vault", "id": "/gateway/token"}, "from-file")):
        write_config(tmp_path, json.dumps({"gateway": {"auth": {"token": token}},
                                           "secrets": {"providers": {"vault": {"path": str(secret_file)}}}}))
        assert find_gateway(env).token == expected, token
    write_config(tmp_path, json.dumps({"gateway": {"auth": {"token": {"source": "exec", "id": "x"}}}}))
    found = find_gateway(env)
    assert found.token is None and "SecretRef of source 'exec'" in (found.secret_note or "")
    write_config(tmp_path, json.dumps({"gateway": {"auth": {"token": "${UNSET_VAR}"}}}))
    assert "$UNSET_VAR, which is not set here" in (find_gateway(env).secret_note or "")


def test_password_mode_and_a_remote_gateway(tmp_path: Path) -> None:
    write_config(tmp_path, json.dumps({"gateway": {"auth": {"mode": "password", "password": "pw", "token": "t"}}}))
    found = find_gateway({"HOME": str(tmp_path)})
    assert (found.password, found.token) == ("pw", None)
    write_config(tmp_path, json.dumps({"gateway": {"mode": "remote", "remote": {"url": "wss://gw.example:443",
                                                                                "token": "remote-t"},
                                                   "auth": {"token": "local-t"}}}))
    found = find_gateway({"HOME": str(tmp_path)})
    assert (found.url, found.token) == ("wss://gw.example:443", "remote-t")


def test_a_config_that_is_not_json5_is_one_clear_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "{gateway: ")
    with pytest.raises(GatewayConfigError, match=f"{path} is not valid JSON5"):
        find_gateway({"HOME": str(tmp_path)})
