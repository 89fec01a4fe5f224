"""Issue: the CUDA path right before a GPU is lent. Each defect found by reading, as far as its
logic runs on the CPU; tests that compare devices run on every device this machine has (a GPU
machine runs the same file: benchmarks/gpu_check.py does)."""
import copy
import os

import pytest
import torch
import torch.nn as nn
import torchvision.transforms as T

import common
from common import quality
from common.history import watch_for_nan
from conftest import PILImages, assert_same, call, data_args, load, tensors_in
from faults import faulty_iter

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels,mean,std", [(1, (0.5,), (0.5,)), (3, (0.5,) * 3, (0.5,) * 3),
                                               (3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_every_byte_value_comes_out_as_the_cpu_transform_makes_it(device, channels, mean, std):
    """The batches on the device hold exactly what the dataset's own ToTensor + Normalize make on
    the CPU, for all 256 values in every channel (CUDA's x / 255 differs in 126 of them)."""
    values = torch.arange(256, dtype=torch.uint8).repeat(4)[torch.randperm(1024)]
    images = values.view(4, 1, 16, 16).expand(4, channels, 16, 16).contiguous()
    transform = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    loader = common.DataLoader(PILImages(images, transform), batch_size=4, shuffle=False,
                               device=torch.device(device), seed=0)
    batch = next(iter(loader))[0]
    assert batch.device.type == device
    expected = torch.stack([PILImages(images, transform)[k][0] for k in range(4)])
    assert torch.equal(batch.cpu(), expected)


def test_batches_do_not_go_through_normalize(monkeypatch):
    """torchvision's Normalize, called on a GPU batch, copies its mean and std to the device and
    reads (std == 0).any() back: host syncs every batch. The loader looks its table up instead."""
    images = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    loader = common.DataLoader(PILImages(images, transform), batch_size=4, device=torch.device("cpu"), seed=0)

    def refuse(*a, **k):
        raise AssertionError("Normalize called for a batch")
    monkeypatch.setattr(T.Normalize, "forward", refuse)
    assert [x.shape for x, _ in loader] == [(4, 3, 4, 4)] * 2


def test_the_nan_guard_leaves_finite_outputs_and_gradients_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())
    watched = copy.deepcopy(net)
    seen = watch_for_nan(watched, torch.device("cpu"))
    x = torch.randn(16, 4)
    out, out_w = net(x), watched(x)
    assert torch.equal(out, out_w) and not seen
    nn.BCELoss()(out, torch.ones(16, 1)).backward()
    nn.BCELoss()(out_w, torch.ones(16, 1)).backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(net.parameters(), watched.parameters()))
    x[3, 0] = float("nan")
    out_w = watched(x)
    assert seen and out_w[3].item() == 0.5 and torch.isfinite(out_w).all()  # BCELoss never sees the NaN


@pytest.mark.parametrize("script", ["dcgan_celeba", "gan_mnist"])
def test_a_nan_never_reaches_bceloss(script, tmp_path, mnist_root, celeba_root, capsys, monkeypatch):
    """On a GPU, BCELoss meeting a NaN is a device-side assert that ends CUDA for the process (the
    pictures and the checkpoint could not be read any more). The run stops in one sentence before."""
    real_forward = nn.BCELoss.forward

    def finite_only(self, input, target):
        assert torch.isfinite(input).all(), "BCELoss was given a NaN"
        return real_forward(self, input, target)
    monkeypatch.setattr(nn.BCELoss, "forward", finite_only)
    monkeypatch.setattr(common.DataLoader, "__iter__", faulty_iter(nan_at="1:1"))
    assert call(script, *data_args(script, mnist_root, celeba_root), "--epochs", 3, "--outdir", tmp_path) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "in batch 2 of 3 of epoch 2/3" in err
    assert torch.ones(2, device=DEVICES[-1]).sum().item() == 2  # the device still works


def test_training_the_classifier_reseeds_no_cuda_generator(tmp_path, monkeypatch):
    """torch.manual_seed reseeds every CUDA generator too, which fork_rng(devices=[]) does not give
    back: a first run with --eval-every would train differently from one without it."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(seed))
    images, labels = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (60,))
    quality.classifier(images, labels, [str(tmp_path)], torch.device("cpu"))
    assert reseeded == []


def test_the_classifier_is_trained_deterministically_whatever_cudnn_benchmark_says(tmp_path, monkeypatch):
    """Its cache is shared by later runs: one trained under --cudnn-benchmark (cuDNN free to pick
    other kernels) would give deterministic runs other weights, hence other FDs."""
    seen, real_loss = [], torch.nn.functional.cross_entropy

    def loss(*args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark))
        return real_loss(*args, **kwargs)
    monkeypatch.setattr(quality.F, "cross_entropy", loss)
    common.seed_everything(0, cudnn_benchmark=True)  # as --cudnn-benchmark sets them
    try:
        images, labels = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (60,))
        quality.classifier(images, labels, [str(tmp_path)], torch.device("cpu"))
        assert seen and set(seen) == {(True, False)}
        assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == (False, True)
    finally:
        common.seed_everything(0)
        torch.use_deterministic_algorithms(False)


def test_the_cublas_workspace_setting_is_among_what_the_bits_depend_on(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # (deterministic too, so a user may keep it)
    record = common.device.what_the_bits_depend_on(torch.device("cuda", 0))
    assert record["cublas_workspace"] == ":16:8" and record["gpu"] == "a GPU"


def test_torchrun_with_more_processes_than_gpus_is_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(common.UserError, match="more processes on this machine than it has GPUs.*--nproc_per_node=1"):
        common.pick_device("auto")
    assert common.pick_device("cpu") == torch.device("cpu")  # --device cpu runs them on the CPU


@pytest.mark.parametrize("device,backend", [("cpu", "gloo"), ("cuda", "nccl")])
def test_torchrun_takes_the_backend_of_the_device_asked_for(device, backend, monkeypatch):
    import torch.distributed as dist
    chosen = []
    monkeypatch.setattr(dist, "init_process_group", lambda name, **k: chosen.append(name))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert common.init_distributed(torch.device(device)) == (0, 2)
    assert chosen == [backend]


def test_a_cublas_setting_that_is_not_deterministic_is_replaced_with_a_notice(monkeypatch, capsys):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    common.seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and "does not make cuBLAS deterministic" in \
        capsys.readouterr().out
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # one of the two that are: kept
    common.seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8" and capsys.readouterr().out == ""
    torch.use_deterministic_algorithms(False)


def test_amp_keeps_the_last_sigmoid_in_float32():
    """In bfloat16, sigmoid(7) is exactly 1.0, where its gradient is 0: D would learn nothing from a
    fake it takes for real. Under --amp the last sigmoid runs in float32."""
    assert torch.sigmoid(torch.tensor(7.0, dtype=torch.bfloat16)).item() == 1.0
    net = nn.Sequential(nn.Linear(1, 1), nn.Sigmoid())
    with torch.no_grad():
        net[0].weight.fill_(7.0)
        net[0].bias.zero_()
    fast = common.speed_up(net, torch.device("cpu"), amp=True)
    out = fast(torch.ones(1, 1))
    assert out.dtype == torch.float32 and out.item() < 1.0
    nn.BCELoss()(out, torch.zeros(1, 1)).backward()
    assert net[0].weight.grad.abs().item() > 0


def test_checkpoints_hold_cpu_tensors_only(runs):
    """Loaded without map_location, every tensor is on the CPU: a checkpoint trained on a GPU loads
    on a machine without one (meaningful where this suite runs on a GPU)."""
    tensors = tensors_in(torch.load(os.path.join(runs["dcgan_celeba"]["a"], "checkpoint.pt"), weights_only=True))
    assert tensors and all(t.device.type == "cpu" for t in tensors)


def test_a_resume_where_the_bits_would_differ_says_so_in_one_line(tmp_path, mnist_root, capsys):
    """The thread count (on a CPU), the device, the GPU, torch, deterministic mode: recorded; a
    resume under others goes on, saying that it will not end where a straight run would have."""
    args = ["--dataroot", mnist_root, "--batch-size", 16, "--outdir", tmp_path]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    assert call("gan_mnist", *args, "--epochs", 2, "--resume") == 0
    assert "notice" not in capsys.readouterr().out  # the same machine: nothing to say
    ckpt = load(tmp_path)
    assert ckpt["machine"]["torch"] == str(torch.__version__)
    ckpt["machine"]["threads"] = 999
    torch.save(ckpt, os.path.join(tmp_path, "checkpoint.pt"))
    assert call("gan_mnist", *args, "--epochs", 3, "--resume") == 0
    notices = [line for line in capsys.readouterr().out.splitlines() if line.startswith("notice")]
    assert len(notices) == 1 and "threads 999 -> " in notices[0] and "bit for bit" in notices[0]


def test_switching_to_stream_on_resume_stays_bit_exact(runs, tmp_path, mnist_root):
    args = data_args("dcgan_mnist", mnist_root, "") + ["--checkpoint-every", "2", "--outdir", tmp_path]
    assert call("dcgan_mnist", *args, "--epochs", 1) == 0
    assert call("dcgan_mnist", *args, "--epochs", 2, "--resume", "--stream") == 0
    assert_same(load(runs["dcgan_mnist"]["a"]), load(tmp_path))


# ---------------------------------------------------------------------------------------------
# Every branch that runs only on CUDA, called here with a CUDA device (what each gets on a GPU)
# ---------------------------------------------------------------------------------------------

# What torch says where there is no GPU: the only error such a call may end in on this machine.
NO_GPU = ("Found no NVIDIA driver", "No CUDA GPUs are available", "Torch not compiled with CUDA enabled",
          "no CUDA-capable device", "CUDA driver initialization failed", "ProcessGroupNCCL is only supported with GPUs",
          "no GPUs found")


def reaches_the_gpu(call):
    """call() runs as far as the GPU: it passes (on a machine with one), or ends in the error that says
    there is none (then this returns True). A wrong argument, a device without its index, a CPU
    tensor where a CUDA one is needed fail earlier, with other errors: then this raises AssertionError."""
    try:
        call()
    except Exception as e:
        assert any(words in str(e) for words in NO_GPU), f"{type(e).__name__}: {e}"
        return True
    return False


def cuda_only_branches(tmp_path):
    """Each CUDA-only branch of common, the scripts and the benchmarks, under the name the device
    check's docstring lists it by, called with the arguments it gets on a GPU."""
    import dcgan_celeba
    gpu_check = device_check()  # (which puts benchmarks/ on the path)
    import bench
    cuda0, images = torch.device("cuda", 0), torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)

    def nccl_group():  # under torchrun with a GPU: one process, nccl
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
        try:
            common.init_distributed(cuda0)
        finally:
            for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                del os.environ[k]
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    digits = PILImages(images, T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.5,))]))
    return {
        "start_device": lambda: gpu_check.start_device("cuda"),
        "describe": lambda: gpu_check.describe(cuda0),
        "cuda_generators": lambda: gpu_check.cuda_generators(cuda0),
        "sync_debug": lambda: gpu_check.sync_debug("warn"),
        "collectives row": lambda: gpu_check.collectives_in_a_world_of_one(cuda0),
        "sync": lambda: bench.sync(cuda0),
        "dense_rates": lambda: bench.dense_rates("cuda"),
        "use_gpu": lambda: common.device.use_gpu(0),
        "peak_gpu_memory": lambda: common.device.peak_gpu_memory(cuda0),
        "what_the_bits_depend_on": lambda: common.device.what_the_bits_depend_on(cuda0),
        "init_distributed's nccl": nccl_group,
        "on_device": lambda: common.data.on_device(images, cuda0),
        "rows(pinned=True)": lambda: common.data.rows(images, torch.tensor([4, 1]), pinned=True),
        "DataLoader": lambda: common.DataLoader(digits, batch_size=2, device=cuda0, seed=0),
        "classifier": lambda: quality.classifier(images, torch.arange(6), [str(tmp_path)], cuda0),
        "nn.DataParallel": lambda: dcgan_celeba.create_models(
            dcgan_celeba.parse_args(["--ngpu", "2", "--ngf", "8", "--ndf", "8"]), cuda0, 1),
    }


def test_every_cuda_only_branch_runs_as_far_as_the_gpu(tmp_path):
    branches = cuda_only_branches(tmp_path)
    wrong, answered = {}, []
    for name, branch in branches.items():
        try:
            if not reaches_the_gpu(branch):
                answered.append(name)
        except AssertionError as e:
            wrong[name] = str(e)
    assert not wrong, wrong
    if not torch.cuda.is_available():  # without a GPU, torch answers these two without a driver (0 and []),
        assert answered == ["cuda_generators", "peak_gpu_memory"]  # so their arguments go unchecked here
    # The check can fail: the device check's first CUDA line as it was ends in another error
    with pytest.raises(AssertionError, match="Expected a torch.device with a specified index"):
        reaches_the_gpu(lambda: torch.cuda.set_device(torch.device("cuda")))
    doc = " ".join(device_check().__doc__.split())
    assert [name for name in branches if name not in doc] == []  # each listed in the device check's docstring


def test_the_device_check_runs_in_its_small_form(tmp_path, capsys):
    """benchmarks/gpu_check.py on the CPU, tiny: every row passes (or is n/a on the CPU). (Run here as
    `python benchmarks/gpu_check.py --small ...` would run it: its commands start as processes.)"""
    with pytest.raises(SystemExit) as end:
        device_check().main(["--small", "--device", "cpu", "--logdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert end.value.code == 0, out[-3000:]
    table = open(tmp_path / "gpu_check.md").read()
    for check in ["device cpu", "synthetic", "pixel table", "RNGs", "NaN", "host sync", "bit-identical", "--resume",
                  "--stream", "torchrun", "collectives", "--ngpu 2", "--amp --channels-last --cudnn-benchmark", "speed",
                  "test suite"]:
        assert check in table, check
    assert "FAIL" not in table and "| cut |" not in table and out.rstrip().endswith("gpu_check.log")
    assert "DDP gradients: ok" in table and table.count("CPU tensors only: True") == 2
    assert os.path.getsize(tmp_path / "gpu_check.log") > 1000


def device_check():
    """benchmarks/gpu_check.py, imported."""
    import sys
    from conftest import ROOT
    if os.path.join(ROOT, "benchmarks") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_check
    return gpu_check


def test_the_device_check_stops_every_process_at_its_deadline(tmp_path, monkeypatch):
    """Past --seconds the running check is cut, not failed, and leaves no process behind: not even
    one that started a session of its own and ignores SIGTERM (a stuck torchrun worker)."""
    import sys
    import time
    gpu_check = device_check()
    monkeypatch.setattr(gpu_check, "GRACE_SECONDS", 1)
    pids = tmp_path / "pids"
    worker = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    launcher = (f"import os, subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', {worker!r}], "
                f"start_new_session=True); open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{w.pid}}'); "
                f"print('launched', flush=True); time.sleep(300)")
    report = gpu_check.Report(str(tmp_path / "logs"), seconds=3)
    t0 = time.monotonic()
    report.check("a launcher and its stuck worker", lambda: (gpu_check.run(report, [sys.executable, "-c", launcher]),
                                                              (True, "finished"))[1])
    report.check("a check after the deadline", lambda: (True, "ran"))
    assert time.monotonic() - t0 < 30
    assert [row[:2] for row in report.rows] == [("a launcher and its stuck worker", "cut"),
                                                ("a check after the deadline", "cut")]
    for pid in map(int, pids.read_text().split()):
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"process {pid} still runs"
    assert "launched" in open(tmp_path / "logs" / "gpu_check.log").read()


def test_the_device_checks_suite_row_counts_what_ran_before_the_deadline(tmp_path, monkeypatch):
    """Cut by the deadline, the suite's row says how many tests passed before; a failure fails it."""
    gpu_check = device_check()
    printed = "tests/test_a.py::test_one PASSED [ 1%]\ntests/test_a.py::test_two PASSED [ 2%]\ntests/test_b.py::test_x "

    def cut_short(report, command):
        raise gpu_check.PastDeadline(output=printed)
    monkeypatch.setattr(gpu_check, "run", cut_short)
    report = gpu_check.Report(str(tmp_path), seconds=60)
    report.check("test suite", gpu_check.test_suite, report, torch.device("cpu"), False)
    assert report.rows[0][1:3] == ("cut", "on cpu: 2 passed, 0 failed (tests/test_cuda_path.py, -k 'not "
                                          "device_check_runs') before the deadline cut the rest")
    printed += "FAILED [ 3%]\n"
    report.check("test suite", gpu_check.test_suite, report, torch.device("cpu"), False)
    assert report.rows[1][1] == "FAIL" and "2 passed, 1 failed" in report.rows[1][2]
