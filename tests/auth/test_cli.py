"""`fhirpm clients add`, `fhirpm users add`, `fhirpm launch`, `fhirpm keys rotate`: JSON out,
and what they create works at the server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from fhirpm.cli import main


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("FHIRPM_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("FHIRPM_BASE_URL", "https://ehr.example/fhir")
    monkeypatch.setenv("FHIRPM_AUTH__ARGON2_TIME_COST", "1")
    monkeypatch.setenv("FHIRPM_AUTH__ARGON2_MEMORY_KIB", "64")

    def run(*argv: str, stdin: str = "") -> tuple[int, object, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out.strip() else None), err
    return run


def test_clients_add_prints_the_secret_once(cli) -> None:
    code, client, _ = cli("clients", "add", "--name", "Chart", "--type", "confidential",
                          "--redirect-uri", "https://chart.example/cb",
                          "--launch-uri", "https://chart.example/launch")
    assert code == 0
    assert client["token_endpoint_auth_method"] == "client_secret_basic"
    assert client["client_secret"] and "secret_digest" not in client
    code, listed, _ = cli("clients", "list")
    assert code == 0 and [c["client_id"] for c in listed] == [client["client_id"]]
    assert "client_secret" not in listed[0] and "secret_digest" not in listed[0]


def test_backend_client_with_a_jwks_file(cli, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384", parameters={"alg": "ES384"}, auto_kid=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    code, client, _ = cli("clients", "add", "--name", "Lab feed", "--type", "backend",
                          "--jwks-file", str(jwks))
    assert code == 0
    assert client["grant_types"] == ["client_credentials"]
    assert client["scope"] == "system/*.cruds"
    assert "d" not in client["jwks"]["keys"][0]  # only the public part is kept
    assert "client_secret" not in client


def test_invalid_client_is_an_error_message(cli) -> None:
    code, out, err = cli("clients", "add", "--name", "x", "--type", "backend")
    assert code == 1 and out is None and "jwks" in err
    code, _, err = cli("clients", "add", "--name", "x", "--redirect-uri", "not a url")
    assert code == 1 and "redirect_uri" in err


def test_users_add_and_duplicate(cli) -> None:
    code, user, _ = cli("users", "add", "--username", "doc", "--fhir-user", "Practitioner/1",
                        "--name", "Dr Doc", "--password-stdin", stdin="long enough pw\n")
    assert code == 0
    assert user == {"username": "doc", "fhirUser": "Practitioner/1", "name": "Dr Doc",
                    "admin": False, "disabled": False}
    code, _, err = cli("users", "add", "--username", "doc", "--password-stdin",
                       stdin="long enough pw\n")
    assert code == 1 and "already exists" in err
    code, _, err = cli("users", "add", "--username", "x", "--password-stdin", stdin="short\n")
    assert code == 1 and "8 characters" in err
    code, _, err = cli("users", "add", "--username", "y", "--fhir-user", "Observation/1",
                       "--password-stdin", stdin="long enough pw\n")
    assert code == 1 and "fhirUser" in err


def test_launch_prints_the_app_launch_url(cli) -> None:
    _, client, _ = cli("clients", "add", "--name", "Chart", "--redirect-uri",
                       "https://chart.example/cb", "--launch-uri",
                       "https://chart.example/launch?v=2")
    code, launch, _ = cli("launch", "--client", client["client_id"], "--user", "doc")
    assert code == 0
    assert launch["url"].startswith("https://chart.example/launch?v=2&iss=")
    assert "iss=https%3A%2F%2Fehr.example%2Ffhir" in launch["url"]
    assert f"launch={launch['launch']}" in launch["url"]
    code, _, err = cli("launch", "--client", "nope")
    assert code == 1 and "No client" in err


def test_keys_rotate(cli) -> None:
    code, first, _ = cli("keys", "rotate")
    code2, second, _ = cli("keys", "rotate")
    assert code == code2 == 0 and first["kid"] != second["kid"]
