"""The device check: one command that shows the CUDA path right on a lent GPU, and prints one
table last, a row per check with pass / FAIL (or n/a, or cut by the deadline) and its figure.

    python benchmarks/gpu_check.py --logdir "$OUT"             # on a GPU; stops at --seconds (480)
    python benchmarks/gpu_check.py --small --device cpu --logdir /tmp/check  # the same checks, tiny

The small form runs in CI (tests/test_cuda_path.py), so this script is known to work before a GPU
minute is spent on it. Everything after the arguments runs inside a row: an exception anywhere
(the header, the data, a check) costs its row, never the table. The rows, and what each is
expected to take on an H200 in the full form (2,048 synthetic faces, the tutorial's nets and
batch: 16 batches per epoch; from CPU timings of the same work and these assumptions: a process
launch costs 12-18 s there (Python, the torch import, CUDA's start, two epochs, 76 MB checkpoints
written with fsync), an in-process run of two epochs 2-4 s once CUDA has started, and compiling
the two nets 1.5-3 min, so the runs happen in this process wherever no signal or torchrun is
needed, and each check compares against runs already made):

  row                     what it shows                                               expected s
  device                  the GPU, driver, CUDA, cuDNN, torch (CUDA starts here)            10
  data                    2,048 synthetic 178x218 JPEG faces, made on every core             3
  pixel table             DataLoader's batches on the device equal the dataset's own
                          ToTensor+Normalize on the CPU, bit for bit                          2
  RNG                     training the reference digit classifier leaves the CPU and CUDA
                          generators alone; its cache file holds CPU tensors                  3
  NaN                     a diverging run ends in one sentence, exit 3, the checkpoint of
                          the epoch before intact (one save), CUDA still usable after         4
  host syncs              none in steady-state iterations (torch.cuda.set_sync_debug_mode)     4
  bit-identical           two runs in this process: checkpoints and history.csv equal,
                          the checkpoint CPU tensors only (the faces decoded and cached by
                          the NaN row: every run loads the cache)                             8
  SIGINT + --resume       a run stopped mid-epoch by a real SIGINT (a process), resumed
                          here: equal to the straight run                                    20
  --stream                read the files every epoch (2 workers): equal to the straight run   5
  torchrun                nccl, one process: SIGTERM mid-epoch, resumed under torchrun:
                          equal to the straight run (two launches)                           40
  collectives             what torchrun's processes exchange (stop agreement, RNG states,
                          the checkpoint, a barrier, DDP's gradients), called directly on
                          nccl in a world of one (one GPU allows one process, which
                          exchanges nothing while training; DDP across GPUs stays unchecked)  5
  --ngpu 2                one GPU: trains, with its notice                                   3
  speed                   benchmarks/bench.py on the same faces (and their cache): the
                          tutorial's loop against the script, the limits table (4 launches)  80
  test suite              the tests that mean something on CUDA (tests/test_cuda_path.py)    45
  opt-in flags            --amp --channels-last --cudnn-benchmark --compile, together: it
                          trains (last: compiling is the longest row)                       120
                                                                                    total  ~350

The CUDA-only branches the checks reach, each also called on the CPU with a CUDA device by
tests/test_cuda_path.py, which accepts only the error that says there is no GPU or driver (a
device without its index, a wrong argument fail it): start_device, describe, cuda_generators,
sync_debug and the collectives row (here); common.device's use_gpu, peak_gpu_memory,
what_the_bits_depend_on and init_distributed's nccl; common.data's DataLoader on a GPU, on_device
and rows(pinned=True); common.quality's classifier on a GPU; dcgan_celeba's nn.DataParallel
(--ngpu 2); bench.py's sync and dense_rates. On the CPU such a call can show a mistake made before
its first CUDA call only. DDP's device_ids (common.device.ddp) need a GPU to be called at all: the
collectives row is their check.

At the deadline (--seconds) the running check's processes are stopped (SIGTERM, then SIGKILL,
torchrun's workers included), a check running in this process is cut by an alarm 35 s later,
that check and the ones after it are marked cut, and the table is printed all the same. Exit
status: 0 all passed (or n/a), 1 some check failed, 2 none failed but some were cut. Everything a check prints goes to <logdir>/gpu_check.log; the table, as it grows,
to <logdir>/gpu_check.md (so a run cut short still tells what it reached). Needs imageio besides
torch, torchvision, tqdm, matplotlib and pytest (carry its wheel to a machine without it).
"""
import argparse
import contextlib
import copy
import importlib.util
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "benchmarks")]

import torch  # noqa: E402

import common  # noqa: E402
from common import quality  # noqa: E402
from processes import Child  # noqa: E402
from synthetic import PILImages  # noqa: E402

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
        """Run f(*args) -> (passed: True / False / None for n/a, figure[, a value for later checks]).
        An exception fails the row; the deadline (PastDeadline) cuts it: neither passed nor failed.
        Returns the value (None when the row did not pass). A row that runs in this process (no
        command of its own for run() to stop) is cut by an alarm, a little after the deadline."""
        self.write(f"\n===== {name} =====")
        t0, value = time.monotonic(), None
        signal.signal(signal.SIGALRM, self.past_deadline)
        try:
            if t0 > self.deadline:
                raise PastDeadline("not run: past the deadline (--seconds)")
            signal.setitimer(signal.ITIMER_REAL, self.deadline - t0 + 2 * GRACE_SECONDS + 5)  # (after run()'s)
            passed, figure, *value = f(*args)
            value = value[0] if value and passed is not False else None
        except PastDeadline as e:
            passed, figure = "cut", str(e)
        except Exception as e:
            self.write(traceback.format_exc())
            passed, figure = False, f"{type(e).__name__}: {common.errors.first_line(e)[:200]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        result = {True: "pass", False: "FAIL", None: "n/a", "cut": "cut"}[passed]
        self.rows.append((name, result, figure, time.monotonic() - t0))
        self.write(f"-> {result}: {figure}")
        print(f"{result:4s}  {name}: {figure}", flush=True)
        with open(self.table_path, "w") as f:
            f.write(self.table())
        return value

    def past_deadline(self, signum, frame):
        raise PastDeadline("cut short by the deadline (--seconds), in this process")

    def table(self):
        lines = ["| check | result | figure | s |", "|---|---|---|---|"]
        lines += [f"| {name} | {result} | {figure} | {s:.0f} |" for name, result, figure, s in self.rows]
        return "\n".join(lines) + "\n"


def needs(value, what):
    """A value an earlier row made; when that row failed, this one fails saying so."""
    if value is None:
        raise RuntimeError(f"needs {what}, which an earlier row could not make")
    return value


def run(report, command, env=None):
    """A command from the repository root, its output into the log; returns (exit code, output).
    `python FILE ...` and `python -m MODULE ...` (pytest, torchrun) start warm (benchmarks/processes.py:
    torch already imported; torchrun's workers start as it starts them). Past the deadline, the
    command and every process under it get SIGTERM (torchrun passes it on to its workers; the
    scripts save and stop), then SIGKILL, and PastDeadline is raised."""
    report.write("$ " + " ".join(map(str, command)))
    command, env = [str(c) for c in command], {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if command[0] == sys.executable and command[1] == "-m":  # (the file -m runs: a package's __main__.py)
        spec = importlib.util.find_spec(command[2])
        main = os.path.join(os.path.dirname(spec.origin), "__main__.py") if spec.submodule_search_locations else \
            spec.origin
        command = [sys.executable, main] + command[3:]
    if command[0] == sys.executable and not command[1].startswith("-"):
        p = Child(command[1], command[2:], env=env, merged=True)
    else:
        p = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, env=env)
    printed = []
    reader = threading.Thread(target=lambda: printed.extend(p.stdout))
    reader.start()
    try:
        p.wait(timeout=max(1, report.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        stop_all(p, GRACE_SECONDS)
        reader.join(GRACE_SECONDS)
        out = "".join(printed)
        report.write(out + "(stopped: past the deadline)")
        raise PastDeadline(output=out) from None
    reader.join()
    out = "".join(printed)
    report.write(out + f"(exit {p.returncode})")
    return p.returncode, out


def stop_all(p, grace):
    """Stop p and every process under it: SIGTERM to p (to its process group, when it leads one),
    then, after grace seconds, SIGKILL to each process under p (torchrun's workers start sessions
    of their own, outside p's group) and to p."""
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
    leads = os.getpgid(p.pid) == p.pid if p.poll() is None else False
    with contextlib.suppress(OSError):
        (os.killpg if leads else os.kill)(p.pid, signal.SIGTERM)  # (torchrun passes it on to its workers)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=grace)
    for pid in processes + under(p.pid) + ([p.pid] if p.poll() is None else []):  # (those SIGTERM did not end)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        if leads:
            os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=grace)


def in_process(report, *argv, iterate=None):
    """dcgan_celeba.py argv, run in this process (CUDA started once for all such runs; its output
    into the log): (exit code, what it printed). iterate: a DataLoader.__iter__ to run it with."""
    import dcgan_celeba
    report.write("(in this process) dcgan_celeba.py " + " ".join(map(str, argv)))
    out, original, code = io.StringIO(), common.DataLoader.__iter__, 0
    try:
        common.DataLoader.__iter__ = iterate or original
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            common.run_script(lambda: dcgan_celeba.main([str(a) for a in argv]))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        common.DataLoader.__iter__ = original
    report.write(out.getvalue() + f"(exit {code})")
    return code, out.getvalue()


def script(*argv, faults=(), torchrun=False):
    """The command line of `python dcgan_celeba.py argv` (through tests/faults.py with faults, under
    torchrun --standalone --nproc_per_node=1 with torchrun)."""
    target = [os.path.join(ROOT, "tests", "faults.py"), *faults, "dcgan_celeba.py"] if faults else ["dcgan_celeba.py"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] if torchrun \
        else [sys.executable]
    return launcher + target + list(argv)


def tensors_in(obj):
    """Every tensor in a loaded file (nested dicts, lists and tuples)."""
    if torch.is_tensor(obj):
        return [obj]
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []
    return [t for v in values for t in tensors_in(v)]


def on_cpu(obj):
    """Every tensor in obj (a loaded file) is a CPU tensor: the file loads on a machine without a GPU."""
    return all(t.device.type == "cpu" for t in tensors_in(obj))


def first_difference(a, b, path="checkpoint"):
    """Where two loaded files first differ (a tensor's bits, a number, a key), or None."""
    if type(a) is not type(b):
        return path
    if torch.is_tensor(a):
        return None if a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) else path
    if isinstance(a, dict):
        keys = a.keys() == b.keys()
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{path}[{k!r}]"))), None) if keys else path
    if isinstance(a, (list, tuple)):
        same_length = len(a) == len(b)
        return next((d for k, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{path}[{k}]"))),
                    None) if same_length else path
    return None if a == b else path


def same_run(a, b):
    """Two run folders whose checkpoints and history.csv are equal, bit for bit: (True, '') or (False, why)."""
    try:
        where = first_difference(torch.load(os.path.join(a, "checkpoint.pt"), weights_only=True),
                                 torch.load(os.path.join(b, "checkpoint.pt"), weights_only=True))
    except OSError as e:
        return False, f"a checkpoint cannot be read ({e})"
    if where:
        return False, f"checkpoints differ at {where}"
    if open(os.path.join(a, "history.csv"), "rb").read() != open(os.path.join(b, "history.csv"), "rb").read():
        return False, "history.csv differs"
    return True, ""


# ---------------------------------------------------------------------------------------------
# The CUDA-only branches of this script (each called on the CPU by tests/test_cuda_path.py)
# ---------------------------------------------------------------------------------------------

def start_device(choice):
    """The device the checks run on: "cuda" is the first GPU, made the current one (set_device
    needs an index: a bare "cuda" device is refused)."""
    return common.device.use_gpu(0) if choice == "cuda" else torch.device("cpu")


def describe(device):
    """The machine, in one line."""
    gpu = ""
    if device.type == "cuda":
        gpu = (f" ({torch.cuda.get_device_name(device)}, driver {driver_version()}, CUDA {torch.version.cuda}, "
               f"cuDNN {torch.backends.cudnn.version()})")
    return f"device {device}{gpu}, torch {torch.__version__}, python {sys.version.split()[0]}"


def driver_version():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def cuda_generators(device):
    """The states of the CUDA generators (none on the CPU)."""
    return torch.cuda.get_rng_state_all() if device.type == "cuda" else []


def sync_debug(mode):
    """torch.cuda.set_sync_debug_mode: "warn" on every call that makes the host wait for the GPU, 0 off."""
    torch.cuda.set_sync_debug_mode(mode)


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------

def machine(choice, small):
    device = start_device(choice)
    return True, describe(device) + f", {'small' if small else 'full'} form", device


def data(tmp, n):
    from synthetic import make_faces
    faces = make_faces(os.path.join(tmp, "faces"), n)
    return True, f"{n} synthetic 178x218 JPEG faces", faces


def pixel_table(device):
    import torchvision.transforms as T
    differ = total = 0
    for channels, mean, std in [(1, (0.5,), (0.5,)), (3, (0.5,) * 3, (0.5,) * 3),
                                (3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]:
        values = torch.arange(256, dtype=torch.uint8).repeat(8)[torch.randperm(2048)]  # every value, shuffled
        images = values.view(8, 1, 16, 16).expand(8, channels, 16, 16).contiguous()
        transform = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        loader = common.DataLoader(PILImages(images, transform), batch_size=8, shuffle=False, device=device, seed=0)
        batch = next(iter(loader))[0].cpu()
        expected = torch.stack([PILImages(images, transform)[k][0] for k in range(8)])
        differ, total = differ + (batch != expected).sum().item(), total + expected.numel()
    v = torch.arange(256)
    naive = (v.to(device).float().div(255).cpu() != v.float().div(255)).sum().item()
    return differ == 0, f"{differ} of {total} values differ from the CPU transform (x/255 on {device.type}: " \
                        f"{naive} of 256 would)"


def rng_untouched(device):
    images, labels = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (300,))
    torch.manual_seed(5)
    before = torch.get_rng_state(), cuda_generators(device)
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        quality.classifier(images, labels, [d], device)  # trains it
        quality.classifier(images, labels, [d], device)  # loads it
        saved = [torch.load(os.path.join(d, f), weights_only=True) for f in os.listdir(d)]
    after = torch.get_rng_state(), cuda_generators(device)
    cpu_same = torch.equal(before[0], after[0])
    cuda_same = len(before[1]) == len(after[1]) and all(torch.equal(a, b) for a, b in zip(before[1], after[1]))
    return cpu_same and cuda_same and on_cpu(saved), \
        f"CPU generator {'unchanged' if cpu_same else 'CHANGED'}, {len(before[1])} CUDA generator(s) " \
        f"{'unchanged' if cuda_same else 'CHANGED'}; its cache file holds CPU tensors only: {on_cpu(saved)}"


def nan_run(report, device, faces, size_args, outdir):
    from faults import faulty_iter
    code, out = in_process(report, "--dataroot", faces, *size_args, "--device", device.type, "--epochs", 3,
                           "--checkpoint-every", 10**6, "--outdir", outdir, iterate=faulty_iter(nan_at="1:1"))
    sentence = re.search(r"^error: training diverged: .* in batch 2 of \d+ of epoch 2/3; the last checkpoint was "
                         r"left as it was\. .*$", out, re.M)
    ckpt = torch.load(os.path.join(outdir, "checkpoint.pt"), weights_only=True)
    finite = all(torch.isfinite(t).all() for t in ckpt["netD"].values() if t.is_floating_point())
    usable = torch.ones(3, device=device).sum().item() == 3  # CUDA still works in this process
    ok = code == 3 and sentence is not None and "Traceback" not in out and finite and usable and \
        (ckpt["epoch"], ckpt["iteration"]) == (1, 0)
    return ok, f"exit {code}; {'the sentence' if sentence else 'NO sentence'}: {sentence[0][:70] if sentence else ''}" \
               f"...; checkpoint at ({ckpt['epoch']}, {ckpt['iteration']}), weights finite {finite}; " \
               f"{device.type} usable after: {usable}"


def no_host_sync(report, device, faces, outdir, window):
    if device.type != "cuda":
        return None, "no host-device synchronisation exists on the CPU"
    first, last = window
    original = common.DataLoader.__iter__

    def watched(self):  # sync debug mode on from batch `first` to `last` of epoch 0
        for i, batch in enumerate(original(self), self.start):
            sync_debug("warn" if first <= i < last and self.epoch == 0 else 0)
            yield batch
        sync_debug(0)
    draw_every = common.pictures.DRAW_EVERY
    common.pictures.DRAW_EVERY = 10**9  # (no drawing inside the window: the pictures read the numbers)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code, _ = in_process(report, "--dataroot", faces, "--batch-size", 32, "--epochs", 1, "--workers", 2,
                                 "--checkpoint-every", 10**6, "--outdir", outdir, iterate=watched)
    finally:
        common.pictures.DRAW_EVERY = draw_every
        sync_debug(0)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    for s in syncs[:5]:
        report.write(s)
    return code == 0 and not syncs, f"{len(syncs)} synchronizing calls in iterations {first}..{last - 1} (exit {code})"


def celeba_runs(report, device, faces, size_args, tmp):
    """The dcgan_celeba rows: repeat, resume, stream, torchrun, collectives, --ngpu 2."""
    base = ["--dataroot", faces, *size_args, "--device", device.type, "--epochs", 2, "--checkpoint-every", 1000]
    folder = lambda name: os.path.join(tmp, name)  # noqa: E731

    def straight():
        needs(faces, "the faces")  # (the rows below need them too: each fails if the first did)
        codes = [in_process(report, *base, "--outdir", folder(k))[0] for k in "ab"]
        ok, why = same_run(folder("a"), folder("b")) if codes == [0, 0] else (False, f"exits {codes}")
        cpu = ok and on_cpu(torch.load(os.path.join(folder("a"), "checkpoint.pt"), weights_only=True))
        return ok and cpu, why or f"checkpoints and history.csv identical; the checkpoint holds CPU tensors only: {cpu}"
    report.check("dcgan_celeba: two runs bit-identical", straight)

    def resume():
        needs(faces, "the faces")
        code, out = run(report, script(*base, "--outdir", folder("c"), faults=("--signal-at", "1:1/SIGINT")))
        stopped = re.search(r"Stopped in epoch 2/2 after batch 2 of \d+", out)
        code2, _ = in_process(report, *base, "--outdir", folder("c"), "--resume")
        ok, why = same_run(folder("a"), folder("c"))
        return ok and code == 130 and stopped is not None and code2 == 0, \
            f"exit {code} ({stopped[0] if stopped else 'no stop line'}), resume exit {code2}: {why or 'identical'}"
    report.check("dcgan_celeba: SIGINT mid-epoch + --resume = straight", resume)

    def stream():
        needs(faces, "the faces")
        code, _ = in_process(report, *base, "--outdir", folder("d"), "--stream", "--workers", 2)
        ok, why = same_run(folder("a"), folder("d"))
        return ok and code == 0, why or "identical to the in-memory run"
    report.check("dcgan_celeba: --stream = in-memory", stream)

    def torchrun():
        needs(faces, "the faces")
        code, out = run(report, script(*base, "--outdir", folder("f"), faults=("--signal-at", "1:1/SIGTERM"),
                                       torchrun=True))
        stopped = re.search(r"Stopped in epoch 2/2 after batch \d+ of \d+", out)
        code2, _ = run(report, script(*base, "--outdir", folder("f"), "--resume", torchrun=True))
        ok, why = same_run(folder("a"), folder("f"))
        backend = "nccl" if device.type == "cuda" else "gloo"  # (one process: no collective while training)
        # (torchrun reports a worker's exit 143 as its own failure: exit 1)
        return ok and code != 0 and stopped is not None and code2 == 0, \
            f"{backend}, one process: SIGTERM (exit {code}): {stopped[0] if stopped else 'no stop line'}; " \
            f"resumed (exit {code2}): {why or 'identical to the straight run'}"
    report.check("dcgan_celeba: torchrun --standalone --nproc_per_node=1", torchrun)
    report.check("torchrun collectives on this device (a world of 1)", collectives_in_a_world_of_one, device)

    def ngpu():  # (--device auto: on a machine without CUDA the notice says so)
        needs(faces, "the faces")
        code, out = in_process(report, "--dataroot", faces, *size_args, "--epochs", 1, "--ngpu", 2,
                               "--outdir", folder("g"))
        notice = next((line for line in out.splitlines() if line.startswith("notice: --ngpu 2")), None)
        return code == 0 and notice is not None, f"exit {code}; {notice or 'no notice'}"
    report.check("dcgan_celeba: --ngpu 2 on one GPU", ngpu)


def opt_in_flags(report, device, faces, size_args, tmp, small):
    flags = ["--amp", "--channels-last", "--cudnn-benchmark"] + ([] if small else ["--compile"])
    code, out = in_process(report, "--dataroot", needs(faces, "the faces"), *size_args, "--device", device.type,
                           "--epochs", 1, *flags, "--outdir", os.path.join(tmp, "flags"))
    epoch = re.search(r"epoch 1/1 done in ([\d.]+) s \((\d+) img/s\)", out)
    final = re.search(r"final loss_d ([\d.na]+), loss_g ([\d.na]+)", out)
    return code == 0 and final is not None, \
        f"{' '.join(flags)}: exit {code}; epoch 1 {epoch[1] + ' s, ' + epoch[2] + ' img/s' if epoch else '?'}" \
        f"{' (compiling included)' if '--compile' in flags else ' (--compile: left out of the small form)'}; " \
        f"{final[0] if final else 'no final line'}"


def speed(report, device, faces, epochs):
    code, out = run(report, [sys.executable, "benchmarks/bench.py", "--device", device.type, "--scripts", "dcgan_celeba",
                             "--celeba", needs(faces, "the faces"), "--epochs", epochs, "--repeats", 1])
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


# The tests that mean something on CUDA: the file of the CUDA path, less the one that runs this
# check's own small form
DEVICE_TESTS = ["tests/test_cuda_path.py"]
NOT_AGAIN = "not device_check_runs"


def test_suite(report, device, small):
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"] + \
        (["tests", "-k", "network_shapes or init_statistics"] if small else DEVICE_TESTS + ["-k", NOT_AGAIN])
    try:
        code, out = run(report, command)
    except PastDeadline as e:
        code, out = None, e.output
    counts = {word: len(re.findall(rf"^tests/\S+ {word}", out, re.M)) for word in ("PASSED", "FAILED", "ERROR")}
    figure = f"on {device.type}: {counts['PASSED']} passed, {counts['FAILED'] + counts['ERROR']} failed" + \
        (" (two tests, the small form's)" if small else f" ({' '.join(DEVICE_TESTS)}, -k {NOT_AGAIN!r})")
    if code is None and not counts["FAILED"] + counts["ERROR"]:
        raise PastDeadline(figure + " before the deadline cut the rest")
    return code == 0, figure + ("" if code in (0, None) else f"; pytest exit {code}")


def collectives_in_a_world_of_one(device):
    """What dcgan_celeba.py's processes exchange under torchrun (the stop and divergence agreement,
    every RNG state, the checkpoint sent by rank 0, the barrier, DDP's gradients), called directly on
    this device's backend in a process group of one, made in this process. With one process the
    scripts skip all of it, so it is called here."""
    import torch.distributed as dist
    from common.checkpoints import rng_state
    from common.signals import agree
    with socket.socket() as s:  # a free port for the group's store
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        common.init_distributed(device)
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
        backend = dist.get_backend()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    return all(right.values()), f"{backend} " + ", ".join(f"{k}: {'ok' if v else 'WRONG'}" for k, v in right.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--logdir", required=True, help="where gpu_check.log and gpu_check.md go")
    p.add_argument("--small", action="store_true", help="tiny sizes and a few tests: the CPU form CI runs")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=480,
                   help="a deadline: checks not done by then are marked cut, and the table still printed (exit 2 "
                        "if some were cut, 1 if any failed)")
    args = p.parse_args(argv)
    report, alarm = Report(args.logdir, args.seconds), signal.getsignal(signal.SIGALRM)
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    small = args.small
    size_args = ["--batch-size", 8, "--ngf", 8, "--ndf", 8, "--workers", 0] if small else \
        ["--batch-size", 128, "--workers", 2]  # the tutorial's networks and batch: 16 batches per epoch
    try:
        device = report.check("device", machine, args.device, small)
        if device is None:
            device = torch.device("cpu")
            report.check("the rows below", lambda: (False, "ran on the CPU: the device could not be started"))
        faces = report.check("data", data, tmp, 24 if small else 2048)
        report.check("pixel table exact on the device", pixel_table, device)
        report.check("classifier leaves the RNGs alone", rng_untouched, device)
        report.check("NaN: one sentence, exit 3, CUDA usable after", lambda: nan_run(
            report, device, needs(faces, "the faces"), size_args, os.path.join(tmp, "nan")))
        report.check("no host sync in steady-state iterations", lambda: no_host_sync(
            report, device, needs(faces, "the faces"), os.path.join(tmp, "sync"), (3, 5) if small else (3, 48)))
        celeba_runs(report, device, faces, size_args, tmp)
        if small:  # (bench.py runs in tests/test_bench.py, which also reads its output with speed_figure)
            report.check("speed: bench.py, tutorial loop against the script", lambda: (None, "left out of the small form"))
        else:
            report.check("speed: bench.py, tutorial loop against the script", speed, report, device, faces, 1)
        report.check("test suite", test_suite, report, device, small)
        report.check("opt-in flags together", opt_in_flags, report, device, faces, size_args, tmp, small)
    finally:
        signal.signal(signal.SIGALRM, alarm)
        shutil.rmtree(tmp, ignore_errors=True)
        failed = [name for name, result, _, _ in report.rows if result == "FAIL"]
        cut = [name for name, result, _, _ in report.rows if result == "cut"]
        print("\n" + report.table())
        print(f"{len(report.rows) - len(failed) - len(cut)} of {len(report.rows)} checks passed or n/a"
              + (f"; failed: {', '.join(failed)}" if failed else "")
              + (f"; cut by the deadline: {', '.join(cut)}" if cut else "") + f". Log: {report.log_path}")
    sys.exit(1 if failed else 2 if cut else 0)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
