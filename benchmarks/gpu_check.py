"""The device check: one command that shows the CUDA path right on a lent GPU, and prints one
table last, a row per check with pass / FAIL (or n/a, or cut by the deadline) and its figure.

    python benchmarks/gpu_check.py --logdir "$OUT"             # on a GPU; stops at --seconds (480)
    python benchmarks/gpu_check.py --small --device cpu --logdir /tmp/check  # the same checks, tiny

The small form runs in CI (tests/test_cuda_path.py), so this script is known to work before a GPU
minute is spent on it. What each check shows:

  pixel table       DataLoader's batches on the device equal the dataset's own ToTensor+Normalize
                    on the CPU, bit for bit (dividing by 255 on a GPU would not)
  RNG               training the reference digit classifier leaves the CPU and CUDA generators
                    alone, and its cache file holds CPU tensors
  NaN               a diverging dcgan_celeba run ends in one sentence, exit 3, the last checkpoint
                    intact, and CUDA still usable in the same process
  host syncs        none in steady-state iterations between log lines (torch.cuda.set_sync_debug_mode)
  dcgan_celeba      on synthetic 178x218 JPEG faces: two runs bit-identical, their checkpoints CPU
                    tensors only; SIGINT mid-epoch and --resume equal to a straight run; --stream
                    equal to in-memory; torchrun (nccl on a GPU) trains, stops on SIGTERM and
                    resumes; --ngpu 2 on one GPU runs with its notice; --amp, --channels-last,
                    --compile, --cudnn-benchmark each train
  collectives       what torchrun's processes exchange (the stop agreement, the RNG states, the
                    checkpoint, the barrier, DDP's gradients) on this device's backend. One GPU
                    allows one process, and with one the scripts exchange nothing, so this calls
                    each exchange directly; DDP across two GPUs stays unchecked by this script
  speed             benchmarks/bench.py: the tutorial's loop against the script, side by side
  tests             the test suite on this machine's device, the device's own tests first

At the deadline (--seconds) the running check's processes are stopped (SIGTERM, then SIGKILL,
torchrun's workers included), that check and the ones after it are marked cut, and the table is
printed all the same. Exit status: 0 all passed (or n/a), 1 some check failed, 2 none failed but
some were cut. Everything a check prints goes to <logdir>/gpu_check.log; the table, as it grows,
to <logdir>/gpu_check.md (so a run cut short still tells what it reached). Needs imageio besides
torch, torchvision, tqdm, matplotlib and pytest (carry its wheel to a machine without it).
"""
import argparse
import contextlib
import copy
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "benchmarks")]

import torch  # noqa: E402

import common  # noqa: E402
from common import quality  # noqa: E402

common.device.deterministic_cublas()  # before the first product on the GPU (see there)


GRACE_SECONDS = 15  # past the deadline: what a command gets between SIGTERM and SIGKILL


class PastDeadline(TimeoutError):
    """A check cut short by the deadline (--seconds): neither passed nor failed. figure: what
    its row says; output: what its command had printed by then."""

    def __init__(self, figure="cut short by the deadline (--seconds)", output=""):
        super().__init__(figure)
        self.output = output


class Report:
    """The rows of the table, and the log every check writes into."""

    def __init__(self, logdir, seconds):
        self.deadline = time.monotonic() + seconds  # what is not done by then is said to be so
        os.makedirs(logdir, exist_ok=True)
        self.log_path, self.table_path = os.path.join(logdir, "gpu_check.log"), os.path.join(logdir, "gpu_check.md")
        self.log = open(self.log_path, "w")
        self.rows = []

    def write(self, text):
        self.log.write(text if text.endswith("\n") else text + "\n")
        self.log.flush()

    def check(self, name, f, *args):
        """Run f(*args) -> (passed: True / False / None for n/a, figure). An exception fails the row;
        the deadline (PastDeadline) cuts it: neither passed nor failed."""
        self.write(f"\n===== {name} =====")
        t0 = time.monotonic()
        try:
            if t0 > self.deadline:
                raise PastDeadline("not run: past the deadline (--seconds)")
            passed, figure = f(*args)
        except PastDeadline as e:
            passed, figure = "cut", str(e)
        except Exception as e:
            self.write(traceback.format_exc())
            passed, figure = False, f"{type(e).__name__}: {common.errors.first_line(e)[:200]}"
        result = {True: "pass", False: "FAIL", None: "n/a", "cut": "cut"}[passed]
        self.rows.append((name, result, figure, time.monotonic() - t0))
        self.write(f"-> {result}: {figure}")
        print(f"{result:4s}  {name}: {figure}", flush=True)
        with open(self.table_path, "w") as f:
            f.write(self.table())

    def table(self):
        lines = ["| check | result | figure | s |", "|---|---|---|---|"]
        lines += [f"| {name} | {result} | {figure} | {s:.0f} |" for name, result, figure, s in self.rows]
        return "\n".join(lines) + "\n"


def run(report, command, env=None):
    """A command from the repository root, its output into the log; returns (exit code, output).
    Past the deadline, the command and every process under it get SIGTERM (torchrun passes it on
    to its workers; the scripts save and stop), then SIGKILL, and PastDeadline is raised."""
    report.write("$ " + " ".join(map(str, command)))
    p = subprocess.Popen([str(c) for c in command], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        out, _ = p.communicate(timeout=max(1, report.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        out = stop_all(p, GRACE_SECONDS)
        report.write(out + "(stopped: past the deadline)")
        raise PastDeadline(output=out) from None
    report.write(out + f"(exit {p.returncode})")
    return p.returncode, out


def stop_all(p, grace):
    """Stop p and every process under it: SIGTERM to p's process group, then, after grace seconds,
    SIGKILL to the group and to each process under p (torchrun's workers start sessions of their
    own, outside p's group). Returns what p had printed."""
    def under(pid):  # (pid's descendants, read from /proc)
        parents = {}
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
        found, todo = [], [pid]
        while todo:
            children = parents.get(todo.pop(), [])
            found += children
            todo += children
        return found

    processes = under(p.pid)
    with contextlib.suppress(OSError):
        os.killpg(p.pid, signal.SIGTERM)  # (torchrun passes it on to its workers)
    try:
        out, _ = p.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        out = None
    for pid in processes + under(p.pid):  # (those SIGTERM did not end, p's group last)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(p.pid, signal.SIGKILL)
    if out is None:
        try:
            out, _ = p.communicate(timeout=grace)
        except subprocess.TimeoutExpired:  # (something outside its reach still holds its output open)
            p.kill()
            out = ""
    return out


def script(*argv, faults=(), torchrun=False):
    """The command line of `python dcgan_celeba.py argv` (through tests/faults.py with faults, under
    torchrun --standalone --nproc_per_node=1 with torchrun)."""
    target = [os.path.join(ROOT, "tests", "faults.py"), *faults, "dcgan_celeba.py"] if faults else ["dcgan_celeba.py"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] if torchrun \
        else [sys.executable]
    return launcher + target + list(argv)


def on_cpu(obj):
    """Every tensor in obj (a loaded file) is a CPU tensor: the file loads on a machine without a GPU."""
    from conftest import tensors_in
    return all(t.device.type == "cpu" for t in tensors_in(obj))


def same_run(a, b):
    """Two run folders whose checkpoints and history.csv are equal, bit for bit: (True, '') or (False, why)."""
    from conftest import assert_same
    try:
        assert_same(torch.load(os.path.join(a, "checkpoint.pt"), weights_only=True),
                    torch.load(os.path.join(b, "checkpoint.pt"), weights_only=True))
    except AssertionError as e:
        return False, f"checkpoints differ at {e}"
    if open(os.path.join(a, "history.csv"), "rb").read() != open(os.path.join(b, "history.csv"), "rb").read():
        return False, "history.csv differs"
    return True, ""


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------

def pixel_table(device):
    import torchvision.transforms as T
    from conftest import PILImages as Images
    differ = total = 0
    for channels, mean, std in [(1, (0.5,), (0.5,)), (3, (0.5,) * 3, (0.5,) * 3),
                                (3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]:
        values = torch.arange(256, dtype=torch.uint8).repeat(8)[torch.randperm(2048)]  # every value, shuffled
        images = values.view(8, 1, 16, 16).expand(8, channels, 16, 16).contiguous()
        transform = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        loader = common.DataLoader(Images(images, transform), batch_size=8, shuffle=False, device=device, seed=0)
        batch = next(iter(loader))[0].cpu()
        expected = torch.stack([Images(images, transform)[k][0] for k in range(8)])
        differ, total = differ + (batch != expected).sum().item(), total + expected.numel()
    v = torch.arange(256)
    naive = (v.to(device).float().div(255).cpu() != v.float().div(255)).sum().item()
    return differ == 0, f"{differ} of {total} values differ from the CPU transform (x/255 on {device.type}: " \
                        f"{naive} of 256 would)"


def rng_untouched(device):
    images, labels = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (300,))
    torch.manual_seed(5)
    state = lambda: (torch.get_rng_state(), torch.cuda.get_rng_state_all() if device.type == "cuda" else [])  # noqa
    before = state()
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        quality.classifier(images, labels, [d], device)  # trains it
        quality.classifier(images, labels, [d], device)  # loads it
        saved = [torch.load(os.path.join(d, f), weights_only=True) for f in os.listdir(d)]
    after = state()
    same = torch.equal(before[0], after[0]) and all(torch.equal(a, b) for a, b in zip(before[1], after[1]))
    return same and on_cpu(saved), f"CPU generator {'unchanged' if torch.equal(before[0], after[0]) else 'CHANGED'}, " \
                                   f"{len(before[1])} CUDA generator(s) " + \
        ("unchanged" if all(torch.equal(a, b) for a, b in zip(before[1], after[1])) else "CHANGED") + \
        f"; its cache file holds CPU tensors only: {on_cpu(saved)}"


def nan_run(device, faces, size_args, outdir):
    from conftest import call
    from faults import faulty_iter
    original = common.DataLoader.__iter__
    common.DataLoader.__iter__ = faulty_iter(nan_at="1:1")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = call("dcgan_celeba", "--dataroot", faces, *size_args, "--device", device.type, "--epochs", 3,
                        "--checkpoint-every", 1, "--outdir", outdir)
    finally:
        common.DataLoader.__iter__ = original
    lines = err.getvalue().strip().splitlines()
    ckpt = torch.load(os.path.join(outdir, "checkpoint.pt"), weights_only=True)
    finite = all(torch.isfinite(t).all() for t in ckpt["netD"].values() if t.is_floating_point())
    usable = torch.ones(3, device=device).sum().item() == 3  # CUDA still works in this process
    ok = code == 3 and len(lines) == 1 and "epoch 1, iteration 1" in lines[0] and finite and usable and \
        (ckpt["epoch"], ckpt["iteration"]) == (1, 1)
    return ok, f"exit {code}, {len(lines)} line: {lines[-1][:80] if lines else ''}...; checkpoint at " \
               f"({ckpt['epoch']}, {ckpt['iteration']}), weights finite {finite}; {device.type} usable after: {usable}"


def no_host_sync(device, faces, outdir, window):
    if device.type != "cuda":
        return None, "no host-device synchronisation exists on the CPU"
    from conftest import call
    original, first, last = common.DataLoader.__iter__, *window

    def watched(self):  # sync debug mode on from batch `first` to `last` of epoch 0
        for i, batch in enumerate(original(self), self.start):
            torch.cuda.set_sync_debug_mode("warn" if first <= i < last and self.epoch == 0 else 0)
            yield batch
        torch.cuda.set_sync_debug_mode(0)
    common.DataLoader.__iter__, draw_every = watched, common.run.DRAW_EVERY
    common.run.DRAW_EVERY = 10**9
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("always")
            code = call("dcgan_celeba", "--dataroot", faces, "--batch-size", 32, "--epochs", 1, "--workers", 2,
                        "--checkpoint-every", 10**6, "--outdir", outdir)
    finally:
        common.DataLoader.__iter__, common.run.DRAW_EVERY = original, draw_every
        torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    for s in syncs[:5]:
        print(s, file=sys.stderr)
    return code == 0 and not syncs, f"{len(syncs)} synchronizing calls in iterations {first}..{last - 1} (exit {code})"


def celeba_runs(report, device, faces, size_args, tmp, small):
    """The dcgan_celeba rows: repeat, resume, stream, torchrun, --ngpu 2, the opt-in flags."""
    base = ["--dataroot", faces, *size_args, "--device", device.type, "--epochs", 2, "--checkpoint-every", 1000]
    folder = lambda name: os.path.join(tmp, name)  # noqa: E731

    def straight():
        codes = [run(report, script(*base, "--outdir", folder(k)))[0] for k in "ab"]
        ok, why = same_run(folder("a"), folder("b")) if codes == [0, 0] else (False, f"exits {codes}")
        cpu = ok and on_cpu(torch.load(os.path.join(folder("a"), "checkpoint.pt"), weights_only=True))
        return ok and cpu, why or f"checkpoints and history.csv identical; the checkpoint holds CPU tensors only: {cpu}"
    report.check("dcgan_celeba: two runs bit-identical", straight)

    def resume():
        code, out = run(report, script(*base, "--outdir", folder("c"), faults=("--signal-at", "1:1/SIGINT")))
        stopped = re.search(r"Stopped at epoch (\d+), iteration (\d+)", out)
        code2, _ = run(report, script(*base, "--outdir", folder("c"), "--resume"))
        ok, why = same_run(folder("a"), folder("c"))
        return ok and code == 130 and code2 == 0, \
            f"exit {code} ({stopped[0] if stopped else 'no stop line'}), resume exit {code2}: {why or 'identical'}"
    report.check("dcgan_celeba: SIGINT mid-epoch + --resume = straight", resume)

    def stream():
        code, _ = run(report, script(*base, "--outdir", folder("d"), "--stream", "--workers", 2))
        ok, why = same_run(folder("a"), folder("d"))
        return ok and code == 0, why or "identical to the in-memory run"
    report.check("dcgan_celeba: --stream = in-memory", stream)

    def torchrun():
        code, out = run(report, script(*base, "--outdir", folder("e"), torchrun=True))
        code2, out2 = run(report, script(*base, "--outdir", folder("f"), faults=("--signal-at", "1:1/SIGTERM"),
                                         torchrun=True))
        stopped = re.search(r"Stopped at epoch (\d+), iteration (\d+)", out2)
        code3, _ = run(report, script(*base, "--outdir", folder("f"), "--resume", torchrun=True))
        ok, why = same_run(folder("e"), folder("f"))
        plain, _ = same_run(folder("a"), folder("e"))
        backend = "nccl" if device.type == "cuda" else "gloo"  # (one process: no collective while training)
        return ok and code == 0 and stopped is not None and code3 == 0, \
            f"{backend}, one process: trains (exit {code}); SIGTERM: {stopped[0] if stopped else 'no stop line'}; " \
            f"resumed (exit {code3}) {why or 'identical to a straight torchrun run'}; equal to the plain run: {plain}"
    report.check("dcgan_celeba: torchrun --standalone --nproc_per_node=1", torchrun)

    def collectives():  # (one GPU: one process, so the exchanges between processes are tested on the CPU)
        code, out = run(report, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                                 os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--collectives", "--device",
                                 device.type, "--logdir", tmp])
        line = next((x for x in out.splitlines() if x.startswith("collectives:")), "no result line")
        return code == 0 and "WRONG" not in line, line
    report.check("torchrun collectives on this device (a world of 1)", collectives)

    def ngpu():  # (--device auto: on a machine without CUDA the notice says so)
        code, out = run(report, script("--dataroot", faces, *size_args, "--epochs", 1, "--ngpu", 2,
                                       "--outdir", folder("g")))
        notice = next((line for line in out.splitlines() if line.startswith("notice: --ngpu 2")), None)
        return code == 0 and notice is not None, f"exit {code}; {notice or 'no notice'}"
    report.check("dcgan_celeba: --ngpu 2 on one GPU", ngpu)

    for flag in ["--amp", "--channels-last", "--compile", "--cudnn-benchmark"]:
        def flagged(flag=flag):
            if small and flag == "--compile":
                return None, "left out of the small form (compiling takes minutes on 2 cores; tests/test_speed.py runs it)"
            code, out = run(report, script(*base[:-4], "--epochs", 1, flag, "--outdir", folder(flag.strip("-"))))
            epoch = re.search(r"epoch 1/1 done in ([\d.]+) s \((\d+) img/s\)", out)
            final = re.search(r"final loss_d ([\d.na]+), loss_g ([\d.na]+)", out)
            return code == 0 and final is not None, \
                f"exit {code}; epoch 1 {epoch[1] + ' s, ' + epoch[2] + ' img/s' if epoch else '?'} (compiling " \
                f"included where it applies); {final[0] if final else 'no final line'}"
        report.check(f"dcgan_celeba {flag}", flagged)


def speed(report, device, faces_root, n_faces, epochs):
    code, out = run(report, [sys.executable, "benchmarks/bench.py", "--device", device.type, "--scripts", "dcgan_celeba",
                             "--celeba", faces_root, "--faces", n_faces, "--epochs", epochs, "--repeats", 1])
    figure = speed_figure(out)
    return code == 0 and figure is not None, figure or f"exit {code}"


def speed_figure(out):
    """The dcgan_celeba row and the dense rates of bench.py's output, in one line (None if absent)."""
    row = next((line for line in out.splitlines() if line.startswith("| dcgan_celeba |")), None)
    rates = [line for line in out.splitlines() if line.startswith(("| matrix product |", "| 1x1 convolution |"))]
    if row is None or not rates:
        return None
    cells = [c.strip() for c in row.strip("|").split("|")]
    return (f"{cells[1]} faces: whole command {cells[4]}, loop {cells[7]} faster than the tutorial; images/s "
            f"(tutorial / script) {cells[8]}; peak GPU memory {cells[10]}; dense GFLOP/s: "
            + "; ".join(" ".join(c.strip() for c in r.strip("|").split("|")) for r in rates))


# The full form's suite: the device's own tests first (the deadline may cut the rest); not the two
# tests that repeat rows of this check (its small form, bench.py)
DEVICE_TESTS_FIRST = ["test_cuda_path.py", "test_speed.py", "test_core.py", "test_resume.py", "test_quality.py"]
NOT_AGAIN = "not device_check_runs and not benchmark_runs"


def test_suite(report, device, small):
    files = DEVICE_TESTS_FIRST + sorted(f for f in os.listdir(os.path.join(ROOT, "tests"))
                                        if f.startswith("test_") and f.endswith(".py") and f not in DEVICE_TESTS_FIRST)
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"] + \
        (["tests", "-k", "network_shapes or init_statistics"] if small else
         [os.path.join("tests", f) for f in files] + ["-k", NOT_AGAIN])
    try:
        code, out = run(report, command)
    except PastDeadline as e:
        code, out = None, e.output
    counts = {word: len(re.findall(rf"^tests/\S+ {word}", out, re.M)) for word in ("PASSED", "FAILED", "ERROR")}
    figure = f"on {device.type}: {counts['PASSED']} passed, {counts['FAILED'] + counts['ERROR']} failed" + \
        (" (two tests, the small form's)" if small else f" (-k {NOT_AGAIN!r})")
    if code is None and not counts["FAILED"] + counts["ERROR"]:
        raise PastDeadline(figure + " before the deadline cut the rest")
    return code == 0, figure + ("" if code in (0, None) else f"; pytest exit {code}")


def collectives_in_a_world_of_one(device):
    """Under torchrun: what dcgan_celeba.py's processes exchange (the stop and divergence agreement,
    every RNG state, the checkpoint sent by rank 0, the barrier, DDP's gradients) on this device's
    backend. With one process the scripts skip all of it, so it is called here directly."""
    import torch.distributed as dist
    from common.checkpoints import rng_state
    from common.signals import agree
    common.init_distributed(device)
    common.seed_everything(0)  # (deterministic algorithms, as in the scripts)
    stop, diverged = agree(device, 2, torch.ones((), dtype=torch.bool, device=device))
    mine, states = rng_state(), [None]
    dist.all_gather_object(states, mine)  # (what rng_states() does with more than one process)
    box = [{"x": torch.arange(3)}]
    dist.broadcast_object_list(box, src=0)
    dist.barrier()
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)).to(device)
    twin, x = copy.deepcopy(net), torch.randn(16, 4).to(device)
    common.ddp(net, device)(x).sum().backward()  # DDP averages the gradients over the processes: of one here
    twin(x).sum().backward()
    right = {"agree": (stop, diverged) == (2.0, 1.0),
             "all_gather_object": torch.equal(states[0]["torch"], mine["torch"]),
             "broadcast_object_list": torch.equal(box[0]["x"], torch.arange(3)), "barrier": True,  # (it returned)
             "DDP gradients": all(torch.equal(p.grad, q.grad) for p, q in zip(net.parameters(), twin.parameters()))}
    ok = all(right.values())
    print(f"collectives: {dist.get_backend()} " + ", ".join(f"{k}: {'ok' if v else 'WRONG'}" for k, v in right.items()),
          flush=True)
    dist.destroy_process_group()
    return ok


def driver_version():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--logdir", required=True, help="where gpu_check.log and gpu_check.md go")
    p.add_argument("--small", action="store_true", help="tiny sizes and a few tests: the CPU form CI runs")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=480,
                   help="a deadline: checks not done by then are marked cut, and the table still printed (exit 2 "
                        "if some were cut, 1 if any failed)")
    p.add_argument("--collectives", action="store_true", help=argparse.SUPPRESS)  # (one check's child, under torchrun)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.collectives:
        sys.exit(0 if collectives_in_a_world_of_one(device) else 1)
    report = Report(args.logdir, args.seconds)
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    small = args.small
    # The data: synthetic 178x218 JPEG faces (aligned CelebA's size), made on every core
    from bench import make_faces
    faces = os.path.join(tmp, "faces")
    make_faces(os.path.join(faces, "img_align_celeba"), 24 if small else 2048)
    size_args = ["--batch-size", 8, "--ngf", 8, "--ndf", 8, "--workers", 0] if small else \
        ["--batch-size", 128, "--workers", 2]  # the tutorial's networks and batch: 16 batches per epoch
    header = (f"device {device}" + (f" ({torch.cuda.get_device_name(device)}, driver {driver_version()}, CUDA "
                                    f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
                                    if device.type == "cuda" else "")
              + f", torch {torch.__version__}, python {sys.version.split()[0]}, {'small' if small else 'full'} form")
    report.write(header)
    print(header, flush=True)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    report.check("pixel table exact on the device", pixel_table, device)
    report.check("classifier leaves the RNGs alone", rng_untouched, device)
    report.check("NaN: one sentence, exit 3, CUDA usable after", nan_run, device, faces, size_args,
                 os.path.join(tmp, "nan"))
    report.check("no host sync in steady-state iterations", no_host_sync, device, faces, os.path.join(tmp, "sync"),
                 (3, 5) if small else (3, 48))
    celeba_runs(report, device, faces, size_args, tmp, small)
    if small:  # (bench.py runs in tests/test_bench.py, which also reads its output with speed_figure)
        report.check("speed: bench.py, tutorial loop against the script", lambda: (None, "left out of the small form"))
    else:
        report.check("speed: bench.py, tutorial loop against the script", speed, report, device,
                     os.path.join(tmp, "bench_faces"), 4096, 1)
    report.check("test suite", test_suite, report, device, small)

    shutil.rmtree(tmp, ignore_errors=True)
    failed = [name for name, result, _, _ in report.rows if result == "FAIL"]
    cut = [name for name, result, _, _ in report.rows if result == "cut"]
    print("\n" + header + "\n\n" + report.table())
    print(f"{len(report.rows) - len(failed) - len(cut)} of {len(report.rows)} checks passed or n/a"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; cut by the deadline: {', '.join(cut)}" if cut else "") + f". Log: {report.log_path}")
    sys.exit(1 if failed else 2 if cut else 0)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
