"""The unit file and the installer: systemd-analyze verify and security, idempotent install."""

import re
import subprocess

from agent.kernel import privileges

from .unitfile import INSTALL, UNIT, directives, unit_caps

# `systemd-analyze security --offline=yes systemd/connscope.service` (systemd
# 252). Lower is safer; README "Running as a service" records it. A change
# that raises it fails here: justify it and update both.
SECURITY_SCORE_MAX = 2.3


def _analyze(*args):
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def test_verify_passes_on_the_installed_unit(installed_root):
    unit = installed_root / "etc/systemd/system/connscope.service"
    cp = _analyze("verify", str(unit))
    assert cp.returncode == 0 and cp.stderr == "" and cp.stdout == "", cp.stderr


def test_verify_catches_a_broken_unit(installed_root, tmp_path):
    """The check above can fail: a typo in a directive is reported."""
    bad = tmp_path / "connscope.service"
    bad.write_text((installed_root / "etc/systemd/system/connscope.service").read_text()
                   .replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    cp = _analyze("verify", str(bad))
    assert "Failed to parse protect system value, ignoring: stricter" in cp.stderr


def _score(unit) -> float:
    cp = _analyze("security", "--offline=yes", str(unit))
    m = re.search(r"Overall exposure level for connscope\.service: (\d+\.\d)", cp.stdout)
    assert m, cp.stdout + cp.stderr
    return float(m.group(1))


def test_security_score_stays_at_or_below_the_recorded_one(installed_root):
    assert _score(UNIT) <= SECURITY_SCORE_MAX
    assert _score(installed_root / "etc/systemd/system/connscope.service") == _score(UNIT)


def test_the_unit_grants_exactly_the_measured_capabilities():
    needed = sorted(name for name, _why in privileges.NEEDED.values())
    assert sorted(unit_caps()) == sorted(needed + ["CAP_SYS_PTRACE"])
    d = directives()
    assert d["CapabilityBoundingSet"] == d["AmbientCapabilities"]
    assert d["User"] == ["connscope"] and d["NoNewPrivileges"] == ["yes"]
    # the directive that breaks BCC (it hides /usr/lib/modules) stays off
    assert d["ProtectKernelModules"] == ["no"]


def test_install_again_updates_code_keeps_the_configuration(installed_root):
    conf = installed_root / "etc/connscope/connscope.toml"
    unit = installed_root / "etc/systemd/system/connscope.service"
    conf.write_text(conf.read_text() + "# edited by the operator\n")
    before = conf.read_text(), unit.read_text()
    cp = subprocess.run(["bash", str(INSTALL), "--root", str(installed_root)], capture_output=True, text=True,
                        timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert f"keeping {conf}" in cp.stderr
    assert (conf.read_text(), unit.read_text()) == before
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    users = [line for line in (installed_root / "etc/passwd").read_text().splitlines() if line.startswith("connscope:")]
    assert len(users) == 1 and users[0].endswith(":/nonexistent:/usr/sbin/nologin")
    assert f"ExecStart={installed_root}/opt/connscope/venv/bin/connscope run --config {conf}" in unit.read_text()
    version = subprocess.run([str(installed_root / "opt/connscope/venv/bin/connscope"), "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("connscope, version ")
    # Debian's BCC through the venv's system site-packages
    bcc = subprocess.run([str(installed_root / "opt/connscope/venv/bin/python"), "-c", "import bcc; print(bcc.__file__)"],
                         capture_output=True, text=True, timeout=60)
    assert bcc.stdout.startswith("/usr/lib/python3/dist-packages/bcc/"), bcc.stderr


def test_install_rejects_an_unknown_option():
    cp = subprocess.run(["bash", str(INSTALL), "--bogus"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 1
    assert cp.stderr == f"connscope install: error: unknown option --bogus (fix: see {INSTALL} --help)\n"
