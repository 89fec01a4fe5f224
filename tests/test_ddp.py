"""Issue: dcgan_celeba.py under torchrun with DistributedDataParallel (2 CPU processes, gloo: these
tests are about the CPU, so they pin --device cpu, also on a machine with one GPU). The processes
are started as torchrun starts them, with its environment (torchrun itself, launching the script,
is run by the device check's torchrun row: benchmarks/gpu_check.py)."""
import os
import socket

import pytest
import torch

from conftest import assert_same, call, load, same_files, spawn


def processes(*argv, faults=()):
    """What `torchrun --standalone --nproc_per_node=2 dcgan_celeba.py --device cpu argv` starts: two
    processes, each told its rank, the world and where to meet (the environment torchrun sets),
    started warm. Returns (the exit codes, both stdouts, both stderrs), as torchrun shows them."""
    with socket.socket() as s:  # (a free port for the two to meet at)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    children = [spawn("dcgan_celeba", "--device", "cpu", *argv, faults=faults, env={
        "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}) for rank in (0, 1)]
    outputs = [child.communicate(timeout=300) for child in children]
    return [child.returncode for child in children], outputs[0][0] + outputs[1][0], outputs[0][1] + outputs[1][1]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, celeba_root):
    """A 2-process run of 2 epochs: 24 faces in global batches of 4 (2 per process), 6 per epoch,
    with --ema (the average kept by rank 0 of the generator DDP keeps the same in both)."""
    outdir = str(tmp_path_factory.mktemp("ddp") / "straight")
    args = ["--dataroot", celeba_root, "--batch-size", 4, "--ngf", 8, "--ndf", 8, "--workers", 0, "--ema",
            "--epochs", 2, "--checkpoint-every", 100]
    codes, out, err = processes(*args, "--outdir", outdir)
    assert codes == [0, 0], err[-3000:]
    return outdir, args, out


def test_trains_with_two_processes_and_writes_one_set_of_outputs(straight):
    outdir, _, out = straight
    assert "2 processes" in out
    assert out.count("Starting Training Loop") == 1  # one log: rank 0's
    assert sorted(os.listdir(os.path.join(outdir, "samples"))) == [f"epoch_000{k}.png" for k in range(3)]
    with open(os.path.join(outdir, "history.csv")) as f:
        assert len(f.readlines()) == 1 + 2 * 6  # header + 2 epochs x 6 global batches
    ckpt = load(outdir)
    assert len(ckpt["rng"]) == 2 and ckpt["settings"]["processes"] == 2  # every rank's RNG state
    assert ckpt["average"]["images"] == 2 * 24  # (counted in global batches, as one process counts them)
    assert set(ckpt["average"]["weights"]) == set(ckpt["netG"])  # (the bare generator's names, no "module.")
    assert not all(torch.equal(ckpt["average"]["weights"][k], v) for k, v in ckpt["netG"].items())
    assert not [f for f in os.listdir(outdir) if "tmp" in f]


def test_sigint_under_torchrun_saves_once_and_resumes_bit_for_bit(straight, tmp_path):
    outdir, args, _ = straight
    # The processes agree on a stop every AGREE_EVERY iterations, set to 4 here (10 by default):
    # Ctrl-C as batch 1 of the second epoch begins (iteration 8 of the run: 6 batches per epoch) is
    # agreed on at iteration 8, so all of them stop after batch 2 of 6.
    codes, out, err = processes(*args, "--outdir", tmp_path, faults=("--signal-at", "1:1/SIGINT", "--agree-every", "4"))
    assert codes == [130, 130], err[-3000:]  # (which torchrun reports as a failure)
    assert err.count("Stopped in epoch 2/2 after batch 2 of 6") == 1, err[-3000:]
    assert "torchrun --standalone --nproc_per_node=2" in err
    assert "Traceback" not in err
    codes, out, err = processes(*args, "--outdir", tmp_path, "--resume")
    assert codes == [0, 0], err[-3000:]
    assert_same(load(outdir), load(str(tmp_path)))
    assert same_files(outdir, str(tmp_path), "history.csv")


def test_resuming_a_two_process_run_in_one_process_is_refused(straight, capsys, celeba_root):
    outdir, args, _ = straight
    assert call("dcgan_celeba", *args[:-4], "--epochs", 3, "--outdir", outdir, "--resume") == 1
    assert "processes: 2 -> 1" in capsys.readouterr().err


def test_batch_size_must_divide_among_the_processes(tmp_path, celeba_root):
    codes, out, err = processes("--dataroot", celeba_root, "--batch-size", 7, "--outdir", tmp_path)
    assert codes == [1, 1] and err.count("must divide evenly among them") == 2
