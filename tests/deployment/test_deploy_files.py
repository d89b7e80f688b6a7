"""The files of ``deploy/`` agree with each other and with the service: no container engine
runs here, so what cannot be built is at least checked (the same topology runs with local
processes in ``test_topology.py``)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from casemgr.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SETTING = re.compile(r"\bCASEMGR_[A-Z_]+\b")


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def known_settings() -> set[str]:
    """Every CASEMGR_* name the service reads (casemgr/settings.py and the CLI)."""
    names = set(SETTING.findall((ROOT / "casemgr" / "settings.py").read_text()))
    return {name.rstrip("_") for name in names}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def test_compose_runs_two_service_processes_behind_the_trusted_proxy():
    services = compose()["services"]
    servers = {name: s for name, s in services.items() if s.get("command", [None])[0] == "serve"}
    assert len(servers) >= 2
    proxy_address = services["proxy"]["networks"]["frontend"]["ipv4_address"]
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddyfile)
    assert upstreams is not None
    assert sorted(upstreams.group(1).split()) == sorted(f"{name}:8000" for name in servers)
    for name, service in servers.items():
        env = service["environment"]
        assert env["CASEMGR_TRUSTED_PROXIES"] == proxy_address, name
        assert env["CASEMGR_AUDIT_CHECKPOINT_SECONDS"] == "0", name  # one sealer
        assert env["CASEMGR_LOG_FORMAT"] == "json"
        assert service["read_only"] is True and service["user"].split(":")[0] != "0"
        assert service["cap_drop"] == ["ALL"]
        assert "frontend" in service["networks"] and "backend" in service["networks"]
        assert make_url(env["CASEMGR_DATABASE_URL"]).password is None  # a pgpass file has it
        assert env["PGPASSFILE"].startswith("/run/secrets/")
        keys = [v for v in service["volumes"] if isinstance(v, dict) and "keys" in v["source"]]
        assert keys and keys[0]["read_only"] is True
        assert keys[0]["target"] == env["CASEMGR_KEYS_DIR"]
    assert "audit checkpoint" in " ".join(services["checkpointer"]["command"])
    assert compose()["networks"]["backend"]["internal"] is True
    # The database is never given the key ring.
    assert not any("keys" in str(v) for v in services["postgres"]["volumes"])


def test_compose_names_only_settings_the_service_reads():
    used: set[str] = set()
    for service in compose()["services"].values():
        used |= {name for name in service.get("environment", {}) if name.startswith("CASEMGR_")}
    used |= set(SETTING.findall((DEPLOY / "systemd" / "casemgr.env.example").read_text()))
    # Deployment-only names: the proxy's and the units' own.
    deployment_only = {
        "CASEMGR_DOMAIN",
        "CASEMGR_TLS",
        "CASEMGR_LISTEN_HOST",
        "CASEMGR_BACKUP_DIR",
        "CASEMGR_KEY_BACKUP_DIR",
    }
    assert used - deployment_only <= known_settings(), used - deployment_only - known_settings()
    # And the values the compose file gives are ones the service accepts.
    env = {
        key: str(value)
        for key, value in compose()["services"]["app1"]["environment"].items()
        if key.startswith("CASEMGR_") and "${" not in str(value)
    }
    settings = Settings.from_env(env)
    assert [str(n) for n in settings.trusted_proxies] == ["172.30.0.10/32"]
    assert settings.log_format == "json" and settings.checkpoint_interval_seconds == 0


def test_the_container_image_runs_unprivileged_with_keys_mounted_from_outside():
    text = (DEPLOY / "Containerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "ENV" in final and "CASEMGR_KEYS_DIR=/run/secrets/casemgr-keys" in final
    assert "COPY keys" not in text and "keys/" not in text
    assert re.search(r'ENTRYPOINT \["tini", "--", "casemgr"\]', final)
    assert "PYTHONDONTWRITEBYTECODE=1" in final and "compileall" in text
    # pg_dump of the database's major version, and the PDF font.
    postgres_major = re.search(r"library/postgres:(\d+)", (DEPLOY / "compose.yaml").read_text())
    assert postgres_major is not None
    assert f"postgresql-client-{postgres_major.group(1)}" in final
    assert "fonts-noto-cjk" in final
    assert "--constraint requirements.lock" in text
    # Everything the image copies exists.
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for name in source.split():
            assert (ROOT / name).exists(), name


def test_the_systemd_units_fit_together():
    service = unit("casemgr@.service")["Service"]
    assert "serve" in service["ExecStart"] and "--port %i" in service["ExecStart"]
    assert service["User"] == "casemgr" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and "/var/lib/casemgr" in service["ReadWritePaths"]
    text = (DEPLOY / "systemd" / "casemgr@.service").read_text()
    assert "Environment=CASEMGR_AUDIT_CHECKPOINT_SECONDS=0" in text.splitlines()
    for timer, command in (
        ("casemgr-checkpoint.timer", "audit checkpoint"),
        ("casemgr-backup.timer", "casemgr backup"),
    ):
        target = unit(timer)["Timer"]["Unit"]
        assert (DEPLOY / "systemd" / target).exists()
        assert command in unit(target)["Service"]["ExecStart"]
        assert unit(target)["Service"]["Type"] == "oneshot"


def test_systemd_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for path in (DEPLOY / "systemd").iterdir():
        if path.suffix in (".service", ".timer"):
            name = path.name.replace("@.service", "@8001.service")
            (tmp_path / name).write_text(path.read_text())
    names = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(  # nosec B603: fixed arguments
        [analyze, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "is not executable: No such file or directory" not in line
    ]
    assert problems == []


def test_the_documents_cover_every_new_setting():
    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for name in (
        "CASEMGR_LOG_FORMAT",
        "CASEMGR_METRICS_ALLOW",
        "CASEMGR_METRICS_TOKEN_FILE",
        "CASEMGR_SHRED_LOG_FILE",
        "CASEMGR_UNUSUAL_READS_PER_HOUR",
        "CASEMGR_SCHOOL_HOURS",
        "CASEMGR_SCHOOL_DAYS",
        "CASEMGR_TIMEZONE",
    ):
        assert name in readme and name in guide, name
        assert name in known_settings(), name
    assert "docs/deployment.md" in readme
    assert "never stored with" in guide.lower() or "never stored together" in guide.lower()
