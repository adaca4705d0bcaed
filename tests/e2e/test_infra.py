"""The test infrastructure leaves the machine as it found it: each down script undoes its up script (idempotent)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "tests" / "infra"
pytestmark = pytest.mark.slow


def sh(*args, check=True, timeout=900):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


def read(path: str) -> str:
    return Path(path).read_text() if Path(path).exists() else ""


def test_sshd_down_undoes_sshd_up(tmp_path):
    keys_before = read("/root/.ssh/authorized_keys")
    key = sh("bash", str(INFRA / "sshd_up.sh"), "2299", str(tmp_path)).stdout.split()[-1]
    pid = (tmp_path / "sshd.pid").read_text().strip()
    assert read("/root/.ssh/authorized_keys") == keys_before  # the key is authorized in the test sshd's own file
    assert "[127.0.0.1]:2299" in read("/root/.ssh/known_hosts")
    login = ["ssh", "-p", "2299", "-i", key, "-o", "BatchMode=yes", "root@127.0.0.1", "true"]
    assert sh(*login, check=False).returncode == 0
    for _ in range(2):  # idempotent
        sh("bash", str(INFRA / "sshd_down.sh"), "2299", str(tmp_path))
    assert not Path(f"/proc/{pid}").exists()
    assert "[127.0.0.1]:2299" not in read("/root/.ssh/known_hosts")
    assert read("/root/.ssh/authorized_keys") == keys_before


def test_slurm_down_undoes_slurm_up_and_up_brings_it_back():
    sh("bash", str(INFRA / "slurm_up.sh"))
    mariadb = read("/run/mysqld/mysqld.pid").strip()
    parent = sh("ps", "-o", "comm=", "-p", sh("ps", "-o", "ppid=", "-p", mariadb).stdout.strip()).stdout.strip()
    assert parent not in ("bash", "sh"), f"a shell ({parent}) stayed behind as MariaDB's parent"
    try:
        for _ in range(2):  # idempotent
            sh("bash", str(INFRA / "slurm_down.sh"))
        assert "mmnode" not in sh("ip", "netns", "list").stdout
        assert sh("ip", "link", "show", "mm-br0", check=False).returncode != 0
        assert sh("iptables", "-C", "FORWARD", "-i", "mm-br0", "-o", "mm-br0", "-j", "ACCEPT", check=False).returncode
        assert "mmnode" not in read("/etc/hosts")
        assert not list(Path("/dev").glob("fakegpu*"))
        for pid_file in ("/run/slurmctld.pid", "/run/slurmdbd.pid", "/run/mysqld/mysqld.pid", "/run/munge/munged.pid"):
            pid = read(pid_file).strip()
            assert not pid or not Path(f"/proc/{pid}").exists(), pid_file
    finally:
        up = sh("bash", str(INFRA / "slurm_up.sh"), check=False)  # the other tests' cluster, back
    assert up.returncode == 0, up.stderr
    assert "slurm up" in up.stdout
