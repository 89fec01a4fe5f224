"""`python FILE ARGS` as a process of its own, started warm: for the tests and the benchmarks, which
start hundreds of short commands.

A fresh interpreter takes about 8 s on a 2-core CPU to import torch and torchvision. These
processes are forked instead from a server that imported them once (multiprocessing's
forkserver, whose server runs no tensor op: a fork after one can hang in OpenMP). Each is what
`python FILE ARGS` would be: its own pid, its own signals and limits, its own exit code, FILE run
as __main__ with sys.argv; only the imports are done already, and the start takes a second.

    p = Child("gan_mnist.py", ["--epochs", "1"], env={...}, limit=2**20)  # limit: ulimit -f, in bytes
    for line in p.stdout: ...             # stdout and stderr are text, line by line
    out, err = p.communicate(timeout=240)
    p.returncode                          # -N after signal N, as subprocess.Popen has it
"""
import os
import signal
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARM = ["torch", "torchvision", "matplotlib.figure", "imageio.v3", "tqdm", "common"]
_context = None


def forkserver():
    global _context
    if _context is None:
        import multiprocessing
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)  # (the server imports common from here)
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(WARM)
    return _context


def warm_up():
    """Start the server now (a fresh interpreter importing WARM: seconds), so that no timed child
    waits for it."""
    Child(os.devnull).communicate()


class _Fd:
    """A file descriptor handed to the child (multiprocessing sends it over the server's socket)."""

    def __init__(self, fd):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction
        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(dup):
    return dup.detach()


def _child(out, err, report, cwd, env, limit, group, path, argv):
    """In the child: stdout and stderr onto the parent's pipes (one pipe, when err is out); the
    folder, environment and file-size limit of the command (and a process group of its own, with
    group: as a shell runs a command); then FILE as __main__. Its peak memory goes to `report`."""
    import multiprocessing
    import resource
    import runpy
    multiprocessing.set_start_method(None, force=True)  # (the platform's default again, as in a fresh interpreter)
    os.dup2(out, 1), os.dup2(err if err is not None else out, 2)
    os.close(out)
    if err is not None:
        os.close(err)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # (line by line: a parent reads them as they come)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(cwd)
    if group:
        os.setpgid(0, 0)
    os.environ.clear()
    os.environ.update(env)
    if limit is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    if "OMP_NUM_THREADS" in env:  # (read by a fresh interpreter as torch loads: here torch is loaded)
        import torch
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # (as `python FILE` puts FILE's folder first)
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        os.write(report, str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).encode())


class Child:
    """What subprocess.Popen gives, for `python path argv` started warm: stdout, stderr (None with
    merged=True: both in stdout, as stderr=STDOUT gives), pid, returncode, poll(), wait(),
    communicate(), send_signal(), kill(); and peak_rss_mib once it ended (None if it was killed).
    group=True: the command leads a process group of its own (os.killpg(p.pid, ...) signals it and
    every process it started, as a terminal's Ctrl-C does)."""

    def __init__(self, path, argv=(), *, env=None, cwd=ROOT, limit=None, merged=False, group=False):
        (r_out, w_out), (r_report, w_report) = os.pipe(), os.pipe()
        r_err, w_err = os.pipe() if not merged else (None, None)
        self.process = forkserver().Process(target=_child, args=(
            _Fd(w_out), None if merged else _Fd(w_err), _Fd(w_report), str(cwd), {**os.environ, **(env or {})},
            limit, group, os.path.join(ROOT, path), [str(a) for a in argv]))
        self.process.start()
        for fd in (w_out, w_err, w_report):
            if fd is not None:
                os.close(fd)
        self.pid, self.report = self.process.pid, r_report
        self.stdout, self.stderr = open(r_out), None if merged else open(r_err)
        self.peak_rss_mib = None

    @property
    def returncode(self):
        return self.process.exitcode

    def poll(self):
        return self.process.exitcode

    def wait(self, timeout=None):
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.process.name, timeout)
        if self.report is not None:
            rss = os.read(self.report, 64)
            os.close(self.report)
            self.report, self.peak_rss_mib = None, int(rss) / 1024 if rss else None
        return self.process.exitcode

    def communicate(self, timeout=240):
        """(stdout, stderr) to their ends, once the child has ended."""
        texts = {}

        def read(name):
            stream = getattr(self, name)
            texts[name] = "" if stream is None or stream.closed else stream.read()
            if stream is not None:
                stream.close()
        readers = [threading.Thread(target=read, args=(name,)) for name in ("stdout", "stderr")]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout)
        self.wait(timeout)
        return texts.get("stdout", ""), texts.get("stderr", "")

    def send_signal(self, signum):
        os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)
