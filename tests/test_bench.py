"""The benchmark script runs (its numbers are measured, never asserted)."""
from conftest import make_mnist


def test_benchmark_runs_all_three_side_by_side(tmp_path, capsys):
    import bench  # (benchmarks/bench.py, run here as `python benchmarks/bench.py ARGS` would run it)
    mnist = make_mnist(str(tmp_path / "mnist"), n=200)  # the lesson's loop needs full batches of 100
    bench.main(["--mnist", mnist, "--faces", "24", "--celeba", str(tmp_path / "faces"), "--epochs", "1",
                "--repeats", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "MiB |" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["gan_mnist", "dcgan_mnist", "dcgan_celeba"]
    # the limits table: FLOPs per image of each script's loop, counted, not written in
    limits = [line.split("|") for line in out.splitlines() if line.startswith("| ") and " s | " in line]
    assert [r[1].strip() for r in limits] == ["gan_mnist", "dcgan_mnist", "dcgan_celeba"]
    gflop = {r[1].strip(): float(r[2]) for r in limits}
    # the dense rates, each with the precision it ran in (bfloat16 too: the --amp path)
    rates = [line.split("|") for line in out.splitlines()
             if line.startswith(("| matrix product |", "| 1x1 convolution |"))]
    assert {r[2].strip() for r in rates} == {"float32 (IEEE)", "bfloat16"} and all(float(r[3]) > 0 for r in rates)
    # the device check reads this output into its speed row (its small form leaves the run out)
    from gpu_check import speed_figure
    figure = speed_figure(out)
    assert figure.startswith("24 faces: whole command ") and "bfloat16" in figure
    assert abs(gflop["gan_mnist"] - 0.0057) < 0.0002  # by hand: 2.84 million multiply-adds per image
    assert gflop["gan_mnist"] < gflop["dcgan_mnist"] < gflop["dcgan_celeba"]
