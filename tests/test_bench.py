"""The benchmark script runs (its numbers are measured, never asserted)."""
import os
import subprocess
import sys

from conftest import ROOT, make_mnist


def test_benchmark_runs_all_three_side_by_side(tmp_path):
    mnist = make_mnist(str(tmp_path / "mnist"), n=200)  # the lesson's loop needs full batches of 100
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--mnist", mnist,
                        "--faces", "24", "--celeba", str(tmp_path / "faces"), "--epochs", "2", "--repeats", "1"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["gan_mnist", "dcgan_mnist", "dcgan_celeba"]
