"""Reliability probe: user mistakes and faults, each in a fresh process, each outcome classified.

Every case runs in its own subprocess (the `imaginegym` command line, or Python code), in its
own session and temporary directory, without a display, under a timeout. Its outcome is one of:

    clear error    the expected error, with a message that names the bad value and the fix
                   (command line: one `imaginegym ...: error: ...` line, exit status 2 or 1,
                   no traceback; Python: the expected exception type and message)
    correct        the input is one the library should handle, and the result checks out
    unclear error  an error whose message does not say what is wrong or what to do
    raw traceback  a command-line traceback, or an internal exception (TypeError, KeyError,
                   ... or one raised deep inside torch/numpy/h5py) instead of a library error
    silent wrong   exit status 0 where an error was due, or a result check that failed
    crash          killed by a signal (segfault, abort)
    hang           still running at the timeout (its whole session is killed)
    leak           processes of its session (or pids it reported) alive after it exited

    MUJOCO_GL=egl .venv/bin/python benchmarks/reliability_probe.py --markdown docs/reliability.md
    .venv/bin/python benchmarks/reliability_probe.py --only collect-sigint   # a subset
    .venv/bin/python benchmarks/reliability_probe.py --list

Exits 1 when any case crashed, hung, leaked or was silently wrong. Fixtures (a 3-episode
16x16 cartpole dataset, a held-out one, a reacher one, a tiny trained run) are built once
and copied into a case's directory where the case damages them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_DIRS = tuple(str(ROOT / d) + os.sep for d in ("imaginegym", "envs", "agents"))
OUTCOMES = ("clear error", "correct", "unclear error", "raw traceback", "silent wrong", "crash", "hang", "leak")
FAILING = ("crash", "hang", "leak", "silent wrong")
# Exceptions a library raises only by accident: a bug or an unchecked input reaching torch/numpy/h5py.
INTERNAL = {"TypeError", "AttributeError", "KeyError", "IndexError", "RuntimeError", "AssertionError", "ZeroDivisionError",
            "NameError", "UnboundLocalError", "OverflowError", "NotImplementedError", "RecursionError", "StopIteration",
            "UnicodeDecodeError", "EOFError", "MemoryError", "BrokenProcessPool", "PicklingError", "SafetensorError"}
CLI_ERROR = r"^imaginegym( [\w-]+)*: error: "
LEAK_GRACE = 5.0  # seconds a case's leftover processes get to exit after it did
SIZE, STEPS = 16, 20
TINY_TOKENIZER = ["--tokenizer-image-size", "16", "--tokenizer-channels", "8", "8", "--tokenizer-latent-channels", "4",
                  "--tokenizer-token-patch", "2", "--tokenizer-batch-size", "4", "--tokenizer-warmup-steps", "2", "--tokenizer-steps", "2"]
TINY_DYNAMICS = ["--dynamics-width", "32", "--dynamics-depth", "1", "--dynamics-heads", "2", "--dynamics-context-length", "4",
                 "--dynamics-k-max", "8", "--dynamics-batch-size", "4", "--dynamics-warmup-steps", "2", "--dynamics-steps", "2",
                 "--device", "cpu"]
TINY_TRAIN = TINY_TOKENIZER + TINY_DYNAMICS


def collect_args(out: str, episodes: int = 3, *extra: str, task: str = "cartpole-swingup", size: int = SIZE, steps: int = STEPS) -> list[str]:
    return ["collect", "--task", task, "--size", str(size), "--max-episode-steps", str(steps), "--episodes", str(episodes), "--out", out, *extra]


# Python cases run inside this harness: the case's variables (fixture paths) become globals, and an
# uncaught exception is reported as one JSON line (type, message, the file that raised it) after its traceback.
HARNESS = r'''
import json as _json, os as _os, sys as _sys, traceback as _tb
_MAIN = _os.getpid()
globals().update(_json.loads(_sys.argv[1]))
try:
    exec(compile(_sys.argv[2], "<case>", "exec"), globals())
except SystemExit:
    raise
except BaseException as _err:
    _tb.print_exc()
    _frames = _tb.extract_tb(_err.__traceback__)
    _sys.stderr.write("\nPROBE-EXCEPTION " + _json.dumps({
        "type": type(_err).__name__, "module": type(_err).__module__, "mro": [c.__name__ for c in type(_err).__mro__],
        "message": str(_err), "file": _frames[-1].filename if _frames else "", "pid": _os.getpid()}) + "\n")
    _sys.stderr.flush()
    if _os.getpid() != _MAIN:  # a forked child: leave without the parent's exit handlers
        _os._exit(1)
    raise SystemExit(1)
'''


class Skip(Exception):
    """The case cannot run here (e.g. no permission to mount a small disk)."""


class SetupFailed(Exception):
    """A command a case needs before its probe did not succeed; carries that command's outcome."""

    def __init__(self, outcome: str, detail: str):
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


@dataclasses.dataclass
class Case:
    """One fault. Exactly one of ``cli`` (arguments after `imaginegym`) or ``code`` (Python) is given.

    ``expect``: "ok" (the library should handle it: ``match`` searches stdout), "error" (``match``
    searches the final error message; Python cases name the accepted exception types in ``raises``),
    or "killed" (``driver`` SIGKILLs the process; correct when nothing of it is left and ``post`` passes).
    """

    name: str
    category: str
    what: str
    cli: list[str] | Callable[[Context], list[str]] | None = None
    code: str | None = None
    expect: str = "error"
    match: str = ""
    raises: tuple[str, ...] = ("ValueError",)
    forbid: str | None = None  # in stderr: makes a matching error unclear (e.g. BrokenProcessPool)
    setup: Callable[[Context], None] | None = None
    driver: Callable[[Context, subprocess.Popen], None] | None = None
    post: Callable[[Context], str | None] | None = None  # a problem with the result, or None
    rcs: tuple[int, ...] = (2, 1)
    prefix: str = CLI_ERROR
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    limit_memory: int | None = None  # bytes of address space
    timeout: float = 120.0


@dataclasses.dataclass
class Result:
    case: Case
    outcome: str
    detail: str
    seconds: float


class Context:
    """A case's directory, the shared fixtures, and helpers for setup and checks."""

    def __init__(self, directory: Path, fixtures: dict[str, str], logs: Path):
        self.dir, self.fixtures, self.logs = directory, fixtures, logs
        self.vars: dict[str, str] = dict(fixtures)
        self.cleanups: list[Callable[[], None]] = []
        self.expected_signal: int | None = None
        self.stderr: Path | None = None  # the probed command's stderr, for drivers

    def copy(self, fixture: str, name: str | None = None) -> str:
        """Copy a fixture into the case's directory; the copy's path is also the case variable ``name``."""
        name = name or fixture + "_copy"
        shutil.copytree(self.fixtures[fixture], self.dir / name)
        self.vars[name] = str(self.dir / name)
        return str(self.dir / name)

    def cli(self, *args: str, timeout: float = 240) -> str:
        """Run `imaginegym ARGS` as a setup step that must succeed; returns its stdout."""
        return self.python_ok(["-m", "imaginegym.cli", *args], timeout, " ".join(args))

    def python(self, code: str, timeout: float = 120) -> str:
        """Run Python (with the case's variables) as a setup step or check that must succeed; returns its stdout."""
        return self.python_ok(["-c", HARNESS, json.dumps(self.vars), code], timeout, "check")

    def python_ok(self, args: list[str], timeout: float, label: str) -> str:
        proc, out, err = launch([sys.executable, *args], self.dir, base_env(), self.logs, "setup")
        outcome, detail = finish(proc, timeout, out, err)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if outcome is None and proc.returncode != 0:
            outcome = "crash" if proc.returncode < 0 else "unclear error"
            detail = f"exit status {proc.returncode}: {last_line(stderr)}"
        if outcome is not None:
            raise SetupFailed(outcome, f"{label}: {detail}")
        return stdout


# ---------------------------------------------------------------- processes and their sessions
def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "IMAGINEGYM_TRACEBACK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # other jobs share the cores
    env.update(extra or {})
    return env


def launch(cmd: list[str], cwd: Path, env: dict[str, str], logs: Path, label: str, limit_memory: int | None = None):
    """Start ``cmd`` in a new session, stdout and stderr to files (so leftover processes cannot hold a pipe open)."""
    logs.mkdir(parents=True, exist_ok=True)
    stamp = f"{label}-{time.monotonic_ns()}"
    out, err = logs / f"{stamp}.out", logs / f"{stamp}.err"

    def prepare() -> None:
        # A probe started in the background of a non-interactive shell ignores SIGINT, and children inherit
        # that: Ctrl-C cases need the default, so that Python raises KeyboardInterrupt as in a terminal.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if limit_memory:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))

    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=prepare)
    return proc, out, err


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[0], int(fields[2]), int(fields[3])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Live processes whose session or process group is ``sid`` (a case's pid: it leads both)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[0] not in ("Z", "X") and sid in (stat[1], stat[2]):
                members.append(int(entry))
    return members


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def kill_all(pids: list[int], sid: int) -> None:
    try:
        os.killpg(sid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def finish(proc: subprocess.Popen, timeout: float, out: Path, err: Path, reported: Callable[[], tuple[int, ...]] = tuple,
           grace: float = LEAK_GRACE) -> tuple[str | None, str]:
    """Wait for ``proc``; returns ("hang" | "leak", detail) or (None, "") when it exited and left nothing behind."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_all(session_members(proc.pid), proc.pid)
        proc.wait()
        return "hang", f"still running after {timeout:.0f} s: {last_line(err.read_text(errors='replace')) or 'no output'}"
    deadline, pids = time.monotonic() + grace, reported()
    while True:
        left = sorted(set(session_members(proc.pid)) | {p for p in pids if alive(p)})
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if left:
        described = "; ".join(f"{pid} {cmdline(pid)}" for pid in left[:3])
        kill_all(left, proc.pid)
        return "leak", f"{len(left)} process(es) alive {grace:.0f} s after it exited: {described}"
    return None, ""


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("PROBE-")]
    return lines[-1] if lines else ""


def short(text: str, width: int = 220) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# ---------------------------------------------------------------- classification
def cli_error(stderr: str, prefix: str) -> str | None:
    """The command's error message: from the last line that starts with ``prefix`` to the end."""
    lines = stderr.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if re.search(prefix, lines[i]):
            return "\n".join(lines[i:]).strip()
    return None


def python_error(stderr: str) -> dict | None:
    records = [line[len("PROBE-EXCEPTION "):] for line in stderr.splitlines() if line.startswith("PROBE-EXCEPTION ")]
    return json.loads(records[-1]) if records else None


def in_library(path: str) -> bool:
    return path.startswith(LIBRARY_DIRS)


def classify(case: Case, rc: int, stdout: str, stderr: str) -> tuple[str, str]:
    if case.expect == "ok":
        if rc == 0:
            found = re.search(case.match, stdout, re.S)
            return ("correct", short(found.group(0))) if found else ("silent wrong", f"exit 0 but stdout lacks /{case.match}/: {short(last_line(stdout))}")
        return error_outcome(case, rc, stderr, expected=False)
    if case.expect == "killed":
        return ("correct", "nothing of it left after SIGKILL") if rc == -signal.SIGKILL else ("silent wrong", f"exit status {rc}, not killed")
    if rc == 0:
        return "silent wrong", f"exit 0, no error; stdout: {short(last_line(stdout)) or '(none)'}"
    return error_outcome(case, rc, stderr, expected=True)


def error_outcome(case: Case, rc: int, stderr: str, expected: bool) -> tuple[str, str]:
    forbidden = case.forbid and re.search(case.forbid, stderr)
    if case.cli is not None:
        message = cli_error(stderr, case.prefix)
        if "Traceback (most recent call last)" in stderr:
            return "raw traceback", f"rc {rc}, traceback: {short(message or last_line(stderr))}"
        if message is None:
            return "unclear error", f"rc {rc}, no `imaginegym ...: error:` line: {short(last_line(stderr)) or '(no stderr)'}"
        if expected and rc in case.rcs and not forbidden and re.search(case.match, message, re.S | re.I):
            return "clear error", f"rc {rc}: {short(message)}"
        if not expected:
            why = "success was due"
        else:
            why = f"exit status {rc} (expected {case.rcs})" if rc not in case.rcs else f"forbidden /{case.forbid}/" if forbidden else f"lacks /{case.match}/"
        return "unclear error", f"rc {rc}, {why}: {short(message)}"
    error = python_error(stderr)
    if error is None:
        return "unclear error", f"rc {rc}, no exception reported: {short(last_line(stderr)) or '(no stderr)'}"
    described = f"{error['type']}: {short(error['message'])}"
    if expected and set(error["mro"]) & set(case.raises) and not forbidden and re.search(case.match, error["message"], re.S | re.I):
        return "clear error", described
    if (error["type"] in INTERNAL and error["type"] not in case.raises) or not (
        in_library(error["file"]) or error["module"].startswith(("imaginegym", "gymnasium"))
    ):
        return "raw traceback", f"{described} (raised in {short_path(error['file'])})"
    why = "" if expected else "success was due; "
    return "unclear error", why + described


def short_path(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def run_case(case: Case, fixtures: dict[str, str], base: Path, keep: bool) -> Result:
    """Run one case in its own directory; the result's detail names paths relative to it ($TMP: the probe's directory)."""
    result = _run_case(case, fixtures, base, keep)
    scrubbed = re.sub(re.escape(str(base)) + r"/[\w.-]*?-\w{8}/", "", result.detail)
    return dataclasses.replace(result, detail=scrubbed.replace(str(base), "$TMP"))


def _run_case(case: Case, fixtures: dict[str, str], base: Path, keep: bool) -> Result:
    start = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix=case.name + "-", dir=base))
    ctx = Context(directory, fixtures, base / "logs")
    try:
        try:
            if case.setup:
                case.setup(ctx)
        except Skip as why:
            return Result(case, "skipped", str(why), time.monotonic() - start)
        except SetupFailed as failure:
            return Result(case, failure.outcome, "setup failed: " + failure.detail, time.monotonic() - start)
        if case.cli is not None:
            args = case.cli(ctx) if callable(case.cli) else case.cli
            args = [ctx.vars[a[1:]] if a.startswith("@") and a[1:] in ctx.vars else a for a in args]  # "@D": fixture D
            cmd = [sys.executable, "-m", "imaginegym.cli", *args]
        else:
            cmd = [sys.executable, "-c", HARNESS, json.dumps(ctx.vars), case.code]
        proc, out, err = launch(cmd, directory, base_env(case.env), ctx.logs, case.name, case.limit_memory)
        ctx.stderr = err
        if case.driver:
            case.driver(ctx, proc)
        remaining = max(case.timeout - (time.monotonic() - start), 1.0)
        waited, problem = finish(proc, remaining, out, err, reported_pids(out), grace=10.0 if case.expect == "killed" else LEAK_GRACE)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        rc = proc.returncode
        if waited == "hang":
            return Result(case, "hang", problem, time.monotonic() - start)
        signalled = rc is not None and (rc < 0 or rc in (128 + 11, 128 + 6)) and not (ctx.expected_signal and rc == -ctx.expected_signal)
        if signalled:
            name = signal.Signals(-rc).name if rc < 0 else f"status {rc}"
            extra = f"; also: {problem}" if waited == "leak" else ""
            return Result(case, "crash", f"killed by {name}: {short(last_line(stderr)) or '(no stderr)'}{extra}", time.monotonic() - start)
        if waited == "leak":
            return Result(case, "leak", problem, time.monotonic() - start)
        outcome, detail = classify(case, rc, stdout, stderr)
        if outcome in ("correct", "clear error") and case.post:
            try:
                trouble = case.post(ctx)
            except SetupFailed as failure:
                trouble = failure.detail
            if trouble:
                outcome, detail = "silent wrong", f"{detail}; but {trouble}"
        return Result(case, outcome, detail, time.monotonic() - start)
    finally:
        for cleanup in reversed(ctx.cleanups):
            try:
                cleanup()
            except Exception as error:  # noqa: BLE001 - a failed cleanup must not stop the probe
                print(f"  cleanup of {case.name} failed: {error}", file=sys.stderr)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def reported_pids(out: Path) -> Callable[[], tuple[int, ...]]:
    """The pids a Python case printed on `PROBE-PIDS` lines (its workers), read once it has exited."""
    def read() -> tuple[int, ...]:
        lines = out.read_text(errors="replace").splitlines()
        return tuple(int(p) for line in lines if line.startswith("PROBE-PIDS") for p in line.split()[1:])
    return read


# ---------------------------------------------------------------- drivers, setups and checks
def wait_for_shards(directory: Path, proc: subprocess.Popen, count: int = 1, timeout: float = 90.0) -> bool:
    """Whether ``directory`` holds ``count`` shards while ``proc`` still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if directory.is_dir() and len(list(directory.glob("episode_*.h5"))) >= count:
            return proc.poll() is None
        time.sleep(0.1)
    return False


def kill_parent_mid_run(ctx: Context, proc: subprocess.Popen) -> None:
    if wait_for_shards(ctx.dir / "data", proc):
        ctx.expected_signal = signal.SIGKILL
        os.kill(proc.pid, signal.SIGKILL)


def ctrl_c_mid_run(ctx: Context, proc: subprocess.Popen) -> None:
    """What Ctrl-C in a terminal does: SIGINT to the whole foreground process group."""
    if wait_for_shards(ctx.dir / "data", proc):
        ctx.expected_signal = signal.SIGINT  # dying of it is an unhandled Ctrl-C, not a crash
        os.killpg(proc.pid, signal.SIGINT)


def ctrl_c_after(text: str, delay: float = 2.0):
    """Ctrl-C ``delay`` seconds after ``text`` first appears on the case's stderr (e.g. a progress bar)."""
    def driver(ctx: Context, proc: subprocess.Popen) -> None:
        err = ctx.stderr
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if text in err.read_text(errors="replace"):
                time.sleep(delay)
                if proc.poll() is None:
                    ctx.expected_signal = signal.SIGINT
                    os.killpg(proc.pid, signal.SIGINT)
                return
            time.sleep(0.1)
    return driver


def then_cli(args: list[str], expected_file: str):
    """Post check: the same command run again succeeds and writes ``expected_file``."""
    def check(ctx: Context) -> str | None:
        ctx.cli(*args)
        return None if (ctx.dir / expected_file).is_file() else f"rerun did not write {expected_file}"
    return check


def kill_one_worker(ctx: Context, proc: subprocess.Popen) -> None:
    """SIGKILL one collection worker, as the OOM killer would."""
    if not wait_for_shards(ctx.dir / "data", proc):
        return
    workers = [pid for pid in session_members(proc.pid) if pid != proc.pid and "spawn_main" in cmdline(pid)]
    if workers:
        os.kill(workers[0], signal.SIGKILL)


READ_ALL = """
from imaginegym.data import EpisodeDataset
ds = EpisodeDataset(DATA)
for i in range(len(ds)):
    for key in ("frames", "actions", "rewards", "terminated", "truncated"):
        ds.read(i, key)
print("PROBE-OK", len(ds))
"""


def dataset_readable(relative: str, at_least: int = 1):
    def check(ctx: Context) -> str | None:
        ctx.vars["DATA"] = str(ctx.dir / relative)
        found = re.search(r"PROBE-OK (\d+)", ctx.python(READ_ALL))
        count = int(found.group(1)) if found else 0
        return None if count >= at_least else f"{relative} holds {count} readable episodes, expected >= {at_least}"
    return check


def then_resume(args: list[str]):
    """Post check: the same collection with --resume finishes and the dataset reads back whole."""
    def check(ctx: Context) -> str | None:
        ctx.cli(*args, "--resume")
        return dataset_readable("data", int(args[args.index("--episodes") + 1]))(ctx)
    return check


def mount_small_disk(kib: int):
    def setup(ctx: Context) -> None:
        target = ctx.dir / "disk"
        target.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            raise Skip("mounting a small tmpfs needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(target)], capture_output=True, text=True)
        if done.returncode != 0:
            raise Skip(f"mount failed: {done.stderr.strip()}")
        ctx.cleanups.append(lambda: subprocess.run(["umount", "-l", str(target)], capture_output=True))
    return setup


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_run_and_remember(ctx: Context) -> None:
    run = Path(ctx.copy("R", "RUN"))
    ctx.vars["RUN_DIGESTS"] = json.dumps({name: digest(run / name) for name in ("world_model.safetensors", "tokenizer.pt", "dynamics.pt")})


def run_unchanged(ctx: Context) -> str | None:
    before = json.loads(ctx.vars["RUN_DIGESTS"])
    changed = [name for name, sha in before.items() if not (ctx.dir / "RUN" / name).is_file() or digest(ctx.dir / "RUN" / name) != sha]
    return f"the finished run's {', '.join(changed)} changed" if changed else None


def no_file(relative: str):
    def check(ctx: Context) -> str | None:
        return f"{relative} was written before the error (the check came late)" if (ctx.dir / relative).exists() else None
    return check


def junk(relative: str, text: bytes = b"this is not a checkpoint\n" * 40):
    def setup(ctx: Context) -> None:
        (ctx.dir / relative).write_bytes(text)
    return setup


def truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def flip_frame_chunk(path: Path, frame: int = 10) -> None:
    """XOR 32 bytes in the middle of the compressed chunk that holds ``frames[frame]``."""
    import h5py

    with h5py.File(path, "r") as f:
        info = f["frames"].id.get_chunk_info_by_coord((frame, 0, 0, 0))
    offset = info.byte_offset + info.size // 2 - 16
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(32))
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def safetensors_metadata(path: Path) -> dict:
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return header.get("__metadata__", {})


def setup_grown_run(ctx: Context) -> None:
    ctx.copy("D", "data")
    ctx.cli("train", "world-model", "--data", "data", "--out", "run", *TINY_TRAIN)
    ctx.cli(*collect_args("data", 5), "--resume")


def latents_list_all(ctx: Context) -> str | None:
    meta = safetensors_metadata(ctx.dir / "run" / "latents.safetensors")
    if meta.get("episodes") != "5":
        return f"latents.safetensors lists {meta.get('episodes')} episodes, the grown dataset has 5"
    return None


def foreign_shard(ctx: Context) -> None:
    data = Path(ctx.copy("D", "DATA"))
    shutil.copy(Path(ctx.fixtures["D3"]) / "episode_000000.h5", data / "episode_000003.h5")


def damaged(how: Callable[[Path], None], shard: str = "episode_000001.h5"):
    def setup(ctx: Context) -> None:
        how(Path(ctx.copy("D", "DATA")) / shard)
    return setup


def dataset_with(file: str, content: str):
    def setup(ctx: Context) -> None:
        (Path(ctx.copy("D", "DATA")) / file).write_text(content)
    return setup


# ---------------------------------------------------------------- the cases
IMAGINED = 'import gymnasium as gym, numpy as np, imaginegym\nenv = gym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup")\nenv.reset(seed=0)\n'
DMC = 'import gymnasium as gym, numpy as np, imaginegym\n'
RENDER_IN_PARENT = 'import os, sys, gymnasium as gym, imaginegym\ngym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16).reset(seed=0)\n'
SB3 = """
import stable_baselines3, torch
torch.set_num_threads(1)
env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=36)  # NatureCNN's smallest input
stable_baselines3.PPO("CnnPolicy", env, n_steps=8, batch_size=8, n_epochs=1, device="cpu").learn(8)
print("PROBE-OK learned")
"""
EGL = {"MUJOCO_GL": "egl"}


def cases() -> list[Case]:
    c = []
    add = c.append

    # -------------------------------------------------------- processes
    add(Case("vec-async-dmc", "processes", "gym.make_vec DMC, vectorization_mode='async', reset, step, close", expect="ok", code="""
import gymnasium as gym, imaginegym
envs = gym.make_vec("imaginegym/DMC-v0", num_envs=2, vectorization_mode="async", task="cartpole-swingup", size=16)
print("PROBE-PIDS", *[p.pid for p in envs.processes], flush=True)
obs, _ = envs.reset(seed=0)
obs, *_ = envs.step(envs.action_space.sample())
envs.close()
print("PROBE-OK", obs.shape, float(obs.std()) > 1.0)
""", match=r"PROBE-OK \(2, 16, 16, 3\) True", timeout=150))
    add(Case("vec-async-no-close", "processes", "async DMC vector env never closed: exiting must end its workers", expect="ok", code="""
import gymnasium as gym, imaginegym
envs = gym.make_vec("imaginegym/DMC-v0", num_envs=2, vectorization_mode="async", task="cartpole-swingup", size=16)
print("PROBE-PIDS", *[p.pid for p in envs.processes], flush=True)
envs.reset(seed=0)
obs, *_ = envs.step(envs.action_space.sample())
print("PROBE-OK", obs.shape)
""", match=r"PROBE-OK \(2, 16, 16, 3\)", timeout=150))
    add(Case("vec-default-after-render", "processes", "gym.make_vec DMC without a mode after the parent rendered", expect="ok", code=RENDER_IN_PARENT + """
envs = gym.make_vec("imaginegym/DMC-v0", num_envs=2, task="cartpole-swingup", size=16)
print("PROBE-PIDS", *[p.pid for p in envs.processes], flush=True)
envs.reset(seed=0)
obs, *_ = envs.step(envs.action_space.sample())
envs.close()
print("PROBE-OK", obs.shape, float(obs.std()) > 1.0)
""", match=r"PROBE-OK \(2, 16, 16, 3\) True", timeout=150))
    add(Case("vec-async-bad-task", "processes", "async DMC vector env with an unknown task: an error, no hang, no orphans", code="""
import gymnasium as gym, imaginegym
gym.make_vec("imaginegym/DMC-v0", num_envs=2, vectorization_mode="async", task="cartpole-swingupp", size=16).reset(seed=0)
""", match=r"cartpole-swingupp.*cartpole-swingup", timeout=150))
    add(Case("shimmy-then-imaginegym", "processes", "MUJOCO_GL=egl, import shimmy, then imaginegym; DMC reset/step; a torch optimizer",
             expect="ok", env=EGL, code="""
import shimmy, gymnasium as gym
import imaginegym, torch
env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16)
env.reset(seed=0)
obs, *_ = env.step(env.action_space.sample())
torch.optim.Adam([torch.nn.Parameter(torch.ones(1))]).step()
print("PROBE-OK", obs.shape)
""", match=r"PROBE-OK \(16, 16, 3\)"))
    add(Case("dm_control-then-imaginegym", "processes", "MUJOCO_GL=egl, `from dm_control import suite` before imaginegym; DMC; optimizer",
             expect="ok", env=EGL, code="""
from dm_control import suite
import gymnasium as gym, imaginegym, torch
env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16)
env.reset(seed=0)
obs, *_ = env.step(env.action_space.sample())
torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))]).step()
print("PROBE-OK", obs.shape)
""", match=r"PROBE-OK \(16, 16, 3\)"))
    add(Case("sb3-shimmy-registered-first", "processes", "import shimmy; gym.register_envs(shimmy); imaginegym; SB3 PPO CnnPolicy learn(8)",
             expect="ok", env=EGL, code="import shimmy, gymnasium as gym\ngym.register_envs(shimmy)\nimport imaginegym\n" + SB3,
             match=r"PROBE-OK learned", timeout=240))
    add(Case("sb3-imaginegym-first", "processes", "imaginegym, then shimmy registered; SB3 PPO CnnPolicy learn(8)",
             expect="ok", env=EGL, code="import gymnasium as gym, imaginegym, shimmy\ngym.register_envs(shimmy)\n" + SB3,
             match=r"PROBE-OK learned", timeout=240))
    add(Case("shimmy-render-then-optimizer", "processes", "a shimmy dm_control env rendered, then imaginegym, a world model and an optimizer",
             expect="ok", env=EGL, code="""
import gymnasium as gym, shimmy
gym.register_envs(shimmy)
env = gym.make("dm_control/cartpole-swingup-v0", render_mode="rgb_array", render_kwargs={"height": 32, "width": 32})
env.reset(seed=0)
frame = env.render()
import imaginegym, torch
wm = imaginegym.WorldModel.load("cartpole-swingup")
torch.optim.Adam(wm.parameters()).zero_grad()
print("PROBE-OK", frame.shape)
""", match=r"PROBE-OK \(32, 32, 3\)"))
    add(Case("fork-after-render", "processes", "os.fork after the parent rendered; the child renders", raises=("RuntimeError",), code=RENDER_IN_PARENT + """
pid = os.fork()
if pid == 0:
    gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16).reset(seed=0)
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
""", match=r"fork.*spawn", timeout=90))
    add(Case("fork-pool-after-render", "processes", "a multiprocessing 'fork' Pool renders after the parent rendered", raises=("RuntimeError",),
             code=RENDER_IN_PARENT + """
import multiprocessing
def render(_):
    return gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16).reset(seed=0)[0].shape
with multiprocessing.get_context("fork").Pool(1) as pool:
    print(pool.map(render, [0]))
""", match=r"fork.*spawn", timeout=90))
    add(Case("async-fork-context-after-render", "processes", "AsyncVectorEnv(context='fork') after the parent rendered", raises=("RuntimeError",),
             code=RENDER_IN_PARENT + """
envs = gym.vector.AsyncVectorEnv([lambda: gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16)] * 2, context="fork")
print("PROBE-PIDS", *[p.pid for p in envs.processes], flush=True)
envs.reset(seed=0)
""", match=r"fork.*spawn", timeout=90))
    kill_args = collect_args("data", 60, "--workers", "2")
    add(Case("collect-sigkill-parent", "processes", "SIGKILL the parent of `collect --workers 2` mid-run: workers must go, shards stay readable",
             cli=kill_args, expect="killed", driver=kill_parent_mid_run, post=dataset_readable("data"), timeout=150))
    sigint_args = collect_args("data", 12, "--workers", "2", steps=50)
    add(Case("collect-sigint-workers", "processes", "Ctrl-C (SIGINT to the group) during `collect --workers 2`; then --resume",
             cli=sigint_args, driver=ctrl_c_mid_run, rcs=(130,), prefix=r"^interrupted", match=r"--resume",
             post=then_resume(sigint_args), timeout=150))
    serial_args = collect_args("data", 12, steps=50)
    add(Case("collect-sigint-serial", "processes", "Ctrl-C during a one-worker `collect`; then --resume",
             cli=serial_args, driver=ctrl_c_mid_run, rcs=(130,), prefix=r"^interrupted", match=r"--resume",
             post=then_resume(serial_args), timeout=150))
    add(Case("collect-worker-oom-killed", "processes", "a collection worker SIGKILLed (as by the OOM killer) mid-run",
             cli=collect_args("data", 60, "--workers", "2"), driver=kill_one_worker, match=r"(SIGKILL|killed|memory)",
             post=dataset_readable("data"), timeout=150))
    add(Case("collect-full-disk", "processes", "`collect` onto a 200 KiB disk that fills up", setup=mount_small_disk(200),
             cli=collect_args("disk/data", 40), match=r"(no space|ENOSPC|disk.*full)", post=dataset_readable("disk/data"), timeout=150))
    add(Case("collect-full-disk-workers", "processes", "`collect --workers 2` onto a 200 KiB disk that fills up", setup=mount_small_disk(200),
             cli=collect_args("disk/data", 40, "--workers", "2"), match=r"(no space|ENOSPC|disk.*full)", post=dataset_readable("disk/data"),
             timeout=150))
    add(Case("make-vec-10M-envs", "processes", "imaginegym.make_vec(Imagined, num_envs=10_000_000): refuse before allocating", limit_memory=24 << 30,
             code='import imaginegym\nimaginegym.make_vec("imaginegym/Imagined-v0", num_envs=10_000_000, world_model="cartpole-swingup")',
             match=r"10,?000,?000.*GiB.*(at most|use)"))
    add(Case("exit-without-close", "processes", "a rendering DMC env and an imagined env left open at exit: no errors on the way out",
             expect="ok", code="""
import gymnasium as gym, imaginegym, sys
real = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16)
real.reset(seed=0)
imag = gym.make("imaginegym/Imagined-v0", world_model=WM)
imag.reset(seed=0)
print("PROBE-OK", flush=True)
""", match=r"PROBE-OK"))

    # -------------------------------------------------------- data
    add(Case("foreign-shard-read", "data", "a reacher 24 px shard renamed into a cartpole 16 px dataset, then read", setup=foreign_shard,
             raises=("DatasetError",), code=READ_ALL, match=r"episode_000003\.h5.*(move|delete|remove)"))
    add(Case("foreign-shard-train", "data", "`train world-model` on a dataset holding a foreign shard", setup=foreign_shard,
             cli=["train", "world-model", "--data", "DATA", "--out", "run", *TINY_TRAIN], match=r"episode_000003\.h5.*(move|delete|remove)"))
    add(Case("bit-flip-read", "data", "32 flipped bytes inside a compressed frames chunk, then read every frame",
             setup=damaged(flip_frame_chunk), raises=("DatasetError",), code=READ_ALL,
             match=r"episode_000001\.h5.*(delete|remove|collect|resume)"))
    add(Case("bit-flip-train", "data", "`train world-model` on a dataset with a bit-flipped frames chunk", setup=damaged(flip_frame_chunk),
             cli=["train", "world-model", "--data", "DATA", "--out", "run", *TINY_TRAIN], match=r"episode_000001\.h5.*(delete|remove|collect|resume)"))
    add(Case("truncated-shard-read", "data", "a shard cut to half its size, then read", setup=damaged(truncate), raises=("DatasetError",),
             code=READ_ALL, match=r"episode_000001\.h5.*(delete|remove|collect|resume)"))
    add(Case("truncated-shard-resume", "data", "`collect --resume` on a dataset with a truncated shard", setup=damaged(truncate),
             cli=collect_args("DATA", 4, "--resume"), match=r"episode_000001\.h5.*(delete|remove)"))
    add(Case("garbage-dataset-json", "data", "dataset.json overwritten with garbage, then read", setup=dataset_with("dataset.json", "{garbage"),
             raises=("DatasetError",), code=READ_ALL, match=r"dataset\.json.*(delete|remove|restore|collect)"))
    add(Case("garbage-index-json", "data", "index.json overwritten with garbage: a cache, rebuilt", expect="ok",
             setup=dataset_with("index.json", "[1, 2, oops"), code=READ_ALL + """
import json, os
json.load(open(os.path.join(DATA, "index.json")))
print("PROBE-INDEX rebuilt")
""", match=r"PROBE-OK 3.*PROBE-INDEX rebuilt"))
    add(Case("stale-temp-shard", "data", "a half-written `.episode_000003.h5.<id>.tmp` left by a crash: ignored", expect="ok",
             setup=dataset_with(".episode_000003.h5.3f9c0a1b2c4d.tmp", "partial"), code=READ_ALL, match=r"PROBE-OK 3"))
    add(Case("empty-dir-as-dataset", "data", "EpisodeDataset of an empty directory", setup=lambda ctx: (ctx.dir / "empty").mkdir(),
             raises=("DatasetError",), code='from imaginegym.data import EpisodeDataset\nEpisodeDataset("empty")',
             match=r"empty.*(collect|dataset\.json)"))
    add(Case("read-unknown-key", "data", "dataset.read(0, 'frame') (typo of 'frames')", raises=("KeyError", "ValueError"),
             code='from imaginegym.data import EpisodeDataset\nEpisodeDataset(D).read(0, "frame")', match=r"'frame'.*frames"))
    add(Case("write-episode-other-size", "data", "write_episode of 24 px frames into the 16 px dataset", raises=("DatasetError",),
             setup=lambda ctx: ctx.copy("D", "DATA"), code="""
import numpy as np
from gymnasium import spaces
from imaginegym.data import DatasetMeta, Episode, write_episode
meta = DatasetMeta(env_id="imaginegym/DMC-v0", task="cartpole-swingup", observation_space=spaces.Box(0, 255, (24, 24, 3), np.uint8),
                   action_space=spaces.Box(-1, 1, (1,), np.float32), action_repeat=2, size=24)
episode = Episode(np.zeros((6, 24, 24, 3), np.uint8), np.zeros((5, 1), np.float32), np.zeros(5, np.float32), np.zeros(5, bool), np.zeros(5, bool))
write_episode(DATA, 3, episode, meta, seed=3, policy="random")
""", match=r"(size|observation_space).*(24|16)"))
    add(Case("collect-out-is-file", "data", "`collect --out` naming an existing file", setup=junk("notes.txt", b"my notes\n"),
             cli=collect_args("notes.txt", 2), match=r"notes\.txt.*(not a directory|another|choose)"))
    add(Case("collect-episodes-0", "data", "`collect --episodes 0`", cli=collect_args("data", 0), match=r"episodes.*0"))
    add(Case("collect-workers-0", "data", "`collect --workers 0`", cli=collect_args("data", 2, "--workers", "0"), match=r"workers.*0"))
    add(Case("collect-workers-2.5", "data", "`collect --workers 2.5`", cli=collect_args("data", 2, "--workers", "2.5"), match=r"workers.*2\.5"))
    add(Case("collect-size-0", "data", "`collect --size 0`", cli=collect_args("data", 2, size=0), match=r"size.*0"))
    add(Case("collect-max-steps-0", "data", "`collect --max-episode-steps 0`", cli=collect_args("data", 2, steps=0), match=r"max-episode-steps.*0"))
    add(Case("collect-unknown-task", "data", "`collect --task cartpole-swingupp` (typo)", cli=collect_args("data", 2, task="cartpole-swingupp"),
             match=r"cartpole-swingupp.*cartpole-swingup"))
    add(Case("collect-resume-other-size", "data", "`collect --resume --size 24` on a 16 px dataset", setup=lambda ctx: ctx.copy("D", "data"),
             cli=collect_args("data", 5, "--resume", size=24), match=r"size.*(24.*16|16.*24)", post=dataset_readable("data", 3)))
    add(Case("collect-resume-other-task", "data", "`collect --resume --task cartpole-balance` on a swingup dataset", setup=lambda ctx: ctx.copy("D", "data"),
             cli=collect_args("data", 5, "--resume", task="cartpole-balance"), match=r"cartpole-balance.*cartpole-swingup|cartpole-swingup.*cartpole-balance"))
    add(Case("collect-into-existing", "data", "`collect` into an existing dataset without --resume", setup=lambda ctx: ctx.copy("D", "data"),
             cli=collect_args("data", 5), match=r"--resume", post=dataset_readable("data", 3)))
    add(Case("collect-non-pixel-env", "data", "`collect --env CartPole-v1 --workers 2`: the worker's own error, not BrokenProcessPool",
             cli=["collect", "--env", "CartPole-v1", "--episodes", "2", "--workers", "2", "--out", "data"], forbid=r"BrokenProcessPool",
             match=r"CartPole-v1.*(pixel|uint8|image|frames)"))
    add(Case("collect-unknown-env", "data", "`collect --env NoSuchEnv-v0`", cli=["collect", "--env", "NoSuchEnv-v0", "--episodes", "2", "--out", "data"],
             match=r"NoSuchEnv"))
    add(Case("collect-garbage-dataset-json", "data", "`collect --resume` onto a dataset whose dataset.json is garbage",
             setup=dataset_with("dataset.json", "{garbage"), cli=collect_args("DATA", 5, "--resume"), match=r"dataset\.json.*(delete|remove|restore|collect)"))

    # -------------------------------------------------------- training
    train = ["train", "world-model", "--data"]
    add(Case("train-over-other-dataset", "training", "rerun `train world-model` into a finished run's --out with another dataset",
             setup=copy_run_and_remember, cli=lambda ctx: [*train, ctx.fixtures["D2"], "--out", "RUN", *TINY_TRAIN],
             match=r"fixtures/D\b.*fixtures/D2|fixtures/D2.*fixtures/D\b", post=run_unchanged))
    add(Case("train-tokenizer-steps-0", "training", "`--tokenizer-steps 0`", cli=[*train, "@D", "--out", "run", *TINY_TRAIN, "--tokenizer-steps", "0"],
             match=r"steps.*0|0.*steps", post=no_file("run/tokenizer.pt")))
    add(Case("train-heads-3-width-32", "training", "`--dynamics-heads 3` with width 32: refused before the tokenizer trains",
             cli=[*train, "@D", "--out", "run", *TINY_TRAIN, "--dynamics-heads", "3"], match=r"(?=.*\b3\b)(?=.*\b32\b).*head",
             post=no_file("run/tokenizer.pt")))
    add(Case("train-device-cuda", "training", "`--device cuda` without CUDA", cli=[*train, "@D", "--out", "run", *TINY_TRAIN, "--device", "cuda"],
             match=r"cuda.*cpu"))
    add(Case("train-device-gpu", "training", "`--device gpu`", cli=[*train, "@D", "--out", "run", *TINY_TRAIN, "--device", "gpu"], match=r"gpu.*cpu"))
    add(Case("train-missing-data", "training", "`--data` a directory that does not exist", cli=[*train, "no_such_data", "--out", "run", *TINY_TRAIN],
             match=r"no_such_data.*collect"))
    add(Case("train-dynamics-no-tokenizer", "training", "`train dynamics` into a fresh --out (no tokenizer yet)",
             cli=["train", "dynamics", "--data", "@D", "--out", "run", *TINY_DYNAMICS], match=r"tokenizer\.pt.*(train tokenizer|world-model)"))
    add(Case("train-grown-dataset", "training", "dataset grown from 3 to 5 episodes, rerun with more steps: latents list all 5",
             expect="ok", setup=setup_grown_run, timeout=240,
             cli=[*train, "data", "--out", "run", *TINY_TRAIN, "--tokenizer-steps", "3", "--dynamics-steps", "3"],
             match=r"world model: \S+", post=latents_list_all))
    add(Case("train-context-999", "training", "`--dynamics-context-length 999` on 20-step episodes",
             cli=[*train, "@D", "--out", "run", *TINY_TRAIN, "--dynamics-context-length", "999"], match=r"999.*(episode|longest)",
             post=no_file("run/tokenizer.pt")))
    add(Case("train-corrupt-tokenizer-pt", "training", "tokenizer.pt overwritten with junk, then the run resumed",
             setup=lambda ctx: (ctx.copy("R", "RUN"), junk("RUN/tokenizer.pt")(ctx)),
             cli=lambda ctx: [*train, ctx.fixtures["D"], "--out", "RUN", *TINY_TRAIN], match=r"tokenizer\.pt.*(delete|remove|--restart|retrain|train it again)"))
    add(Case("train-corrupt-dynamics-pt", "training", "dynamics.pt overwritten with junk, then `train dynamics` resumed",
             setup=lambda ctx: (ctx.copy("R", "RUN"), junk("RUN/dynamics.pt")(ctx)),
             cli=lambda ctx: ["train", "dynamics", "--data", ctx.fixtures["D"], "--out", "RUN", *TINY_DYNAMICS],
             match=r"dynamics\.pt.*(delete|remove|--restart|retrain|train it again)"))
    add(Case("train-image-size-32", "training", "`--tokenizer-image-size 32` on 16 px data", cli=[*train, "@D", "--out", "run", *TINY_TRAIN,
             "--tokenizer-image-size", "32"], match=r"(16.*32|32.*16)", post=no_file("run/tokenizer.pt")))
    add(Case("train-out-is-file", "training", "`--out` naming an existing file", setup=junk("notes.txt", b"my notes\n"),
             cli=[*train, "@D", "--out", "notes.txt", *TINY_TRAIN], match=r"notes\.txt.*(not a directory|another|choose)"))
    add(Case("train-batch-size-0", "training", "`--tokenizer-batch-size 0`", cli=[*train, "@D", "--out", "run", *TINY_TRAIN, "--tokenizer-batch-size", "0"],
             match=r"batch.size.*0"))
    add(Case("train-k-max-6", "training", "`--dynamics-k-max 6` (not a power of two)", cli=[*train, "@D", "--out", "run", *TINY_TRAIN,
             "--dynamics-k-max", "6"], match=r"k.max.*6.*power", post=no_file("run/tokenizer.pt")))
    add(Case("train-lr-nan", "training", "`--dynamics-lr nan`", cli=[*train, "@D", "--out", "run", *TINY_TRAIN, "--dynamics-lr", "nan"],
             match=r"lr.*nan|nan.*lr", post=no_file("run/tokenizer.pt")))
    long_training = [*train, "data", "--out", "run", *TINY_TRAIN, "--tokenizer-steps", "3000", "--tokenizer-checkpoint-every", "50"]
    evaluate = ["eval", "world-model"]
    add(Case("eval-horizons-0", "training", "`eval world-model --horizons 0`", cli=[*evaluate, "@R", "--data", "@D", "--horizons", "0"],
             match=r"horizons.*0"))
    add(Case("eval-context-0", "training", "`eval world-model --context 0`", cli=[*evaluate, "@R", "--data", "@D", "--context", "0"], match=r"context.*0"))
    add(Case("eval-missing-data", "training", "`eval world-model --data` a missing directory", cli=[*evaluate, "@R", "--data", "no_such_data", "--train-data", "@D"],
             match=r"no_such_data"))
    add(Case("eval-missing-model", "training", "`eval world-model` of a model path that does not exist", cli=[*evaluate, "no_such_run", "--data", "@D"],
             match=r"no_such_run"))
    add(Case("eval-context-50", "training", "`eval world-model --context 50` with a 4-frame model and 20-step episodes",
             cli=[*evaluate, "@R", "--data", "@D2", "--train-data", "@D", "--context", "50", "--horizons", "1", "--denoise-steps", "1", "--per-episode", "1", "--out", "ev"],
             match=r"\b50\b.*(frames|episode|context)"))
    add(Case("eval-horizon-50", "training", "`eval world-model --horizons 50` on 20-step episodes",
             cli=[*evaluate, "@R", "--data", "@D2", "--train-data", "@D", "--context", "2", "--horizons", "50", "--denoise-steps", "1", "--per-episode", "1", "--out", "ev"],
             match=r"50.*(episode|horizon|long)|horizon.*50"))
    add(Case("eval-run-trained-elsewhere", "training", "`eval world-model RUN` from another directory than the one it trained in (--data was relative)",
             expect="ok", cli=[*evaluate, "@R", "--data", "@D2", "--context", "2", "--horizons", "1", "2", "--denoise-steps", "1",
                               "--per-episode", "1", "--out", "ev"], match=r"wrote \S*results\.json"))
    add(Case("eval-other-task-data", "training", "`eval world-model` of the cartpole run on a reacher 24 px held-out dataset",
             cli=[*evaluate, "@R", "--data", "@D3", "--train-data", "@D", "--context", "2", "--horizons", "1", "--denoise-steps", "1",
                  "--per-episode", "1", "--out", "ev"], match=r"(reacher|24).*(cartpole|16)|(cartpole|16).*(reacher|24)"))
    add(Case("train-interrupted-resumes", "training", "Ctrl-C during `train world-model`, then the same command again: it resumes and exports",
             setup=lambda ctx: ctx.copy("D", "data"), timeout=300, cli=long_training, driver=ctrl_c_after("train tokenizer:", delay=1.0),
             rcs=(130,), prefix=r"(?i)interrupt", match=r"resume|again|same command",
             post=then_cli(long_training, "run/world_model.safetensors")))
    add(Case("eval-truncated-model", "training", "`eval world-model` of a world_model.safetensors cut in half",
             setup=lambda ctx: (ctx.copy("R", "RUN"), truncate(ctx.dir / "RUN" / "world_model.safetensors")),
             cli=[*evaluate, "RUN", "--data", "@D", "--context", "2", "--horizons", "1"], match=r"world_model\.safetensors.*(train|export)"))

    # -------------------------------------------------------- imagined env and API
    add(Case("imagined-unknown-model", "api", 'gym.make(Imagined, world_model="nope")', raises=("FileNotFoundError", "ValueError"),
             code='import gymnasium as gym, imaginegym\ngym.make("imaginegym/Imagined-v0", world_model="nope")', match=r"'nope'.*cartpole-swingup"))
    add(Case("local-dir-shadows-bundled", "api", "an empty ./cartpole-swingup directory, then WorldModel.load('cartpole-swingup')",
             setup=lambda ctx: (ctx.dir / "cartpole-swingup").mkdir(), raises=("FileNotFoundError", "ValueError"),
             code='import imaginegym\nimaginegym.WorldModel.load("cartpole-swingup")', match=r"cartpole-swingup.*(directory|world_model\.safetensors)"))
    for label, action, pattern in [("left", '"left"', r"'left'"), ("None", "None", r"None"), ("nan", "np.array([np.nan], np.float32)", r"nan"),
                                   ("shape-2", "np.zeros(2, np.float32)", r"\(2,\).*\(1,\)")]:
        add(Case(f"imagined-action-{label}", "api", f"imagined env step({action})", code=IMAGINED + f"env.step({action})", match=pattern))
    add(Case("dmc-action-left", "api", 'real DMC env step("left")', code=DMC + 'env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16)\n'
             'env.reset(seed=0)\nenv.step("left")', match=r"'left'.*\(1,\)"))
    add(Case("make-vec-num-envs-2.5", "api", "imaginegym.make_vec(Imagined, num_envs=2.5)",
             code='import imaginegym\nimaginegym.make_vec("imaginegym/Imagined-v0", num_envs=2.5, world_model="cartpole-swingup")', match=r"num_envs.*2\.5"))
    add(Case("make-vec-num-envs-0", "api", "imaginegym.make_vec(Imagined, num_envs=0)",
             code='import imaginegym\nimaginegym.make_vec("imaginegym/Imagined-v0", num_envs=0, world_model="cartpole-swingup")', match=r"num_envs.*0"))
    add(Case("imagined-obs-mode-rgb", "api", 'gym.make(Imagined, obs_mode="rgb")',
             code='import gymnasium as gym, imaginegym\ngym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup", obs_mode="rgb")',
             match=r"'rgb'.*pixels"))
    add(Case("imagined-denoise-steps-3", "api", "gym.make(Imagined, num_denoise_steps=3)",
             code='import gymnasium as gym, imaginegym\ngym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup", num_denoise_steps=3)',
             match=r"3.*power"))
    add(Case("imagined-context-length-100", "api", "gym.make(Imagined, context_length=100)",
             code='import gymnasium as gym, imaginegym\ngym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup", context_length=100)',
             match=r"context_length=100"))
    add(Case("imagined-step-before-reset", "api", "imagined env step before reset", raises=("ResetNeeded",),
             code='import gymnasium as gym, imaginegym\nenv = gym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup")\n'
             'env.step(env.action_space.sample())', match=r"reset"))
    add(Case("imagined-vec-step-before-reset", "api", "imagined vector env step before reset", raises=("ResetNeeded",),
             code='import imaginegym\nenvs = imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=2, world_model="cartpole-swingup")\n'
             'envs.step(envs.action_space.sample())', match=r"reset"))
    step_after_end = """
env.reset(seed=0)
for t in range(1000):
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    if terminated or truncated:
        break
print("ended after", t + 1, "steps", flush=True)
env.step(env.action_space.sample())
"""
    # The env's own limit (the model's episode length, here shortened): gym.make(..., max_episode_steps=N) instead adds
    # Gymnasium's TimeLimit wrapper, which lets steps go on after it truncates, for every Gymnasium env alike.
    add(Case("imagined-step-after-truncation", "api", "gym.make(Imagined) truncated by its own limit: step after truncation", raises=("ResetNeeded",),
             code='import gymnasium as gym, imaginegym\nenv = gym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup")\n'
             'env.unwrapped.max_episode_steps = 2' + step_after_end, match=r"reset"))
    add(Case("imagined-direct-step-after-truncation", "api", "ImaginationEnv(max_episode_steps=2) built directly: step after truncation",
             raises=("ResetNeeded",), code='from imaginegym.imagination import ImaginationEnv\nenv = ImaginationEnv("cartpole-swingup", max_episode_steps=2)'
             + step_after_end, match=r"reset"))
    add(Case("dmc-step-after-truncation", "api", "gym.make(DMC, time_limit=0.1): step after truncation", raises=("ResetNeeded",),
             code='import gymnasium as gym, imaginegym\nenv = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16, time_limit=0.1)'
             + step_after_end, match=r"reset"))
    add(Case("dmc-step-after-close", "api", "DMC env reset after close()", raises=("ClosedEnvironmentError", "Error"),
             code=DMC + 'env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16)\nenv.reset(seed=0)\nenv.close()\nenv.reset(seed=0)',
             match=r"closed"))
    latent = 'import gymnasium as gym, imaginegym\nwm = imaginegym.WorldModel.load("cartpole-swingup")\n'
    add(Case("latent-obs-reacher", "api", "LatentObservation(DMC reacher-easy 64 px, the cartpole world model)",
             code=latent + 'imaginegym.LatentObservation(gym.make("imaginegym/DMC-v0", task="reacher-easy", size=64), wm)',
             match=r"(reacher|\(2,\)).*(cartpole|\(1,\))"))
    add(Case("latent-obs-action-repeat-4", "api", "LatentObservation(DMC cartpole with action_repeat=4, a model trained at 2)",
             code=latent + 'imaginegym.LatentObservation(gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=64, action_repeat=4), wm)',
             match=r"action_repeat.*(4.*2|2.*4)"))
    context = IMAGINED.replace("env.reset(seed=0)\n", "")
    add(Case("reset-context-wrong-shape", "api", "reset with 32 px context_frames for a 64 px model",
             code=context + 'env.reset(options={"context_frames": np.zeros((3, 32, 32, 3), np.uint8), "context_actions": np.zeros((2, 1), np.float32)})',
             match=r"32.*64|64.*32"))
    add(Case("reset-context-float-frames", "api", "reset with float32 context_frames in [0, 1]",
             code=context + 'env.reset(options={"context_frames": np.random.rand(3, 64, 64, 3).astype(np.float32), '
             '"context_actions": np.zeros((2, 1), np.float32)})', match=r"float32.*uint8|uint8.*float32"))
    add(Case("reset-context-actions-count", "api", "reset with 3 context_frames and 1 context action",
             code=context + 'env.reset(options={"context_frames": np.zeros((3, 64, 64, 3), np.uint8), "context_actions": np.zeros((1, 1), np.float32)})',
             match=r"1 context_actions.*3"))
    add(Case("reset-dataset-other-env", "api", "reset(options={'dataset': a reacher 24 px dataset}) on the cartpole model",
             code=context + 'env.reset(options={"dataset": D3})', match=r"(24.*64|64.*24|reacher)"))
    add(Case("load-junk-file", "api", "WorldModel.load of a junk file", setup=junk("model.safetensors"),
             code='import imaginegym\nimaginegym.WorldModel.load("model.safetensors")', match=r"model\.safetensors"))
    add(Case("load-device-gpu", "api", 'WorldModel.load(..., device="gpu")',
             code='import imaginegym\nimaginegym.WorldModel.load("cartpole-swingup", device="gpu")', match=r"'gpu'.*cpu"))
    add(Case("imagined-device-cuda", "api", 'gym.make(Imagined, device="cuda") without CUDA',
             code='import gymnasium as gym, imaginegym\ngym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup", device="cuda")',
             match=r"cuda.*cpu"))
    add(Case("imagined-vec-wrong-batch", "api", "imagined vector env of 2 stepped with one action",
             code='import numpy as np, imaginegym\nenvs = imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=2, world_model="cartpole-swingup")\n'
             'envs.reset(seed=0)\nenvs.step(np.zeros((1, 1), np.float32))', match=r"\(1, 1\).*\(2, 1\)|\(2, 1\).*\(1, 1\)"))
    add(Case("imagined-vec-seeds-3-for-2", "api", "imagined vector env of 2 reset with 3 seeds",
             code='import imaginegym\nenvs = imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=2, world_model="cartpole-swingup")\n'
             'envs.reset(seed=[1, 2, 3])', match=r"3 seeds.*2"))
    add(Case("imagined-vec-max-steps-0", "api", "imaginegym.make_vec(Imagined, max_episode_steps=0)",
             code='import imaginegym\nimaginegym.make_vec("imaginegym/Imagined-v0", num_envs=2, world_model="cartpole-swingup", max_episode_steps=0)',
             match=r"max_episode_steps=0"))
    for label, kwargs, pattern in [("size-0", "size=0", r"size=0"), ("action-repeat-0", "action_repeat=0", r"action_repeat=0"),
                                   ("unknown-task", 'task="cartpole-swingupp"', r"cartpole-swingupp.*cartpole-swingup"),
                                   ("camera-9", "camera_id=9", r"camera_id=9.*-1"),
                                   # Gymnasium wraps envs without a window in its HumanRendering (pygame): its own error names the fix
                                   ("render-human", 'render_mode="human"', r"'human'.*rgb_array|pygame.*pip install")]:
        task = "" if "task" in kwargs else 'task="cartpole-swingup", '
        add(Case(f"dmc-{label}", "api", f"gym.make(DMC, {kwargs})", match=pattern, raises=("ValueError", "DependencyNotInstalled"),
                 code=DMC + f'env = gym.make("imaginegym/DMC-v0", {task}{kwargs})\nenv.reset(seed=0)'))
    add(Case("imagined-render-human", "api", 'gym.make(Imagined, render_mode="human")', raises=("ValueError", "DependencyNotInstalled"),
             code='import gymnasium as gym, imaginegym\ngym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup", render_mode="human").reset(seed=0)',
             match=r"'human'.*rgb_array|pygame.*pip install"))
    return c


# ---------------------------------------------------------------- fixtures, report
def build_fixtures(base: Path) -> dict[str, str]:
    """D: 3 cartpole episodes, 16 px; D2: 2 held-out ones (seed 100); D3: 1 reacher episode, 24 px; R: a tiny run on D."""
    fixtures = base / "fixtures"
    fixtures.mkdir()
    ctx = Context(fixtures, {}, base / "logs")
    ctx.cli(*collect_args("D", 3))
    ctx.cli(*collect_args("D2", 2, "--seed", "100"))
    ctx.cli(*collect_args("D3", 1, task="reacher-easy", size=24, steps=5))
    ctx.cli("train", "world-model", "--data", "D", "--out", "R", *TINY_TRAIN)
    paths = {name: str(fixtures / name) for name in ("D", "D2", "D3", "R")}
    paths["WM"] = str(fixtures / "R" / "world_model.safetensors")
    return paths


def machine() -> str:
    cpu = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = "a GPU" if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()) else "no GPU"
    return f"{os.cpu_count()}-core {cpu}, {gpu}; Linux {platform.release()}, Python {platform.python_version()}"


def totals(results: list[Result]) -> tuple[dict[str, int], str]:
    counts = {outcome: sum(r.outcome == outcome for r in results) for outcome in OUTCOMES}
    skipped = sum(r.outcome == "skipped" for r in results)
    errors = [r for r in results if r.case.expect == "error" and r.outcome != "skipped"]
    clear = sum(r.outcome == "clear error" for r in errors)
    share = f"{clear}/{len(errors)} error cases give a clear error ({100 * clear / max(len(errors), 1):.0f}%)"
    if skipped:
        share += f"; {skipped} skipped"
    return counts, share


def print_table(results: list[Result]) -> None:
    width = max(len(r.case.name) for r in results)
    for r in results:
        print(f"{r.case.name:<{width}}  {r.case.category:<9}  {r.outcome:<13}  {r.seconds:5.1f}s  {r.detail}")
    counts, share = totals(results)
    print("\n" + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    print(share)


def markdown(results: list[Result], started: str, seconds: float) -> str:
    counts, share = totals(results)
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [
        "# Reliability probe",
        "",
        "`benchmarks/reliability_probe.py` runs user mistakes and faults (bad flags and arguments, damaged datasets",
        "and checkpoints, killed and interrupted processes, a full disk, forked renderers, import orders that load two",
        "LLVMs) each in a fresh subprocess, in its own session and temporary directory, without a display and under a",
        "timeout, and classifies each outcome:",
        "",
        "- **clear error**: the expected error, naming the bad value and the fix (command line: one `imaginegym ...: error: ...`",
        "  line, exit status 2, or 1 for OS errors, no traceback; Python: the expected exception type and message);",
        "- **correct**: an input the library should handle, and the result checks out;",
        "- **unclear error**: an error whose message does not name the value or the fix;",
        "- **raw traceback**: a command-line traceback, or an internal exception (TypeError, KeyError, ... or one raised",
        "  inside torch, numpy or h5py) instead of a library error;",
        "- **silent wrong**: exit status 0 where an error was due, or a failed check of the result (e.g. a finished run",
        "  overwritten, shards unreadable after an error);",
        "- **crash**: killed by a signal; **hang**: still running at its timeout; **leak**: processes of its session",
        "  (or pids it reported) alive 5 s after it exited (10 s after a SIGKILL).",
        "",
        "Frames are 16x16, episodes 20 steps, models tiny (the flags are in the script). Reproduce with:",
        "",
        "```bash",
        "MUJOCO_GL=egl .venv/bin/python benchmarks/reliability_probe.py --markdown docs/reliability.md",
        "```",
        "",
        f"Run on {started}, {machine()}, in {seconds / 60:.1f} min. The full-disk cases mount a 200 KiB tmpfs and need root.",
        "",
        "## Totals",
        "",
        "| outcome | cases |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in counts.items()],
        "",
        f"{len(results)} cases; {share}.",
        "",
        "Two behaviours follow Gymnasium rather than imaginegym, by design:",
        "",
        "- `gym.make(..., max_episode_steps=N)` adds Gymnasium's `TimeLimit` wrapper, which (for every Gymnasium env)",
        "  lets `step` go on after it truncates. The envs' own limits (DMC's time limit, an imagined env's",
        "  `max_episode_steps` argument or attribute) raise `ResetNeeded` instead; the cases test those.",
        "- `render_mode=\"human\"` makes `gym.make` wrap the env in Gymnasium's `HumanRendering` (pygame and a",
        "  display); without pygame its own error says what to install.",
        "",
        "## Cases",
        "",
        "| case | category | what | outcome | detail |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r.case.name} | {r.case.category} | {cell(r.case.what)} | {r.outcome} | {cell(r.detail)} |" for r in results],
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="run only cases whose name contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--markdown", help="also write the results as a markdown document to this path")
    parser.add_argument("--keep", action="store_true", help="keep each case's directory and logs (printed at the end)")
    args = parser.parse_args()
    selected = [case for case in cases() if not args.only or any(s in case.name for s in args.only)]
    names = [case.name for case in cases()]
    assert len(names) == len(set(names)), "case names must be unique"
    if args.list:
        for case in selected:
            print(f"{case.name:<40} {case.category:<9} {case.expect:<6} {case.what}")
        print(f"{len(selected)} cases")
        return 0
    if not selected:
        parser.error(f"no case name contains {args.only}")
    started, clock = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="reliability-probe-"))
    try:
        print(f"building fixtures in {base} ...", flush=True)
        try:
            fixtures = build_fixtures(base)
        except SetupFailed as failure:
            print(f"fixtures failed ({failure.outcome}): {failure.detail}", file=sys.stderr)
            return 3
        results = []
        for case in selected:
            result = run_case(case, fixtures, base, args.keep)
            results.append(result)
            print(f"[{len(results)}/{len(selected)}] {case.name}: {result.outcome} ({result.seconds:.1f}s) {short(result.detail, 160)}", flush=True)
        print()
        print_table(results)
        if args.markdown:
            Path(args.markdown).write_text(markdown(results, started, time.monotonic() - clock))
            print(f"wrote {args.markdown}")
        return 1 if any(r.outcome in FAILING for r in results) else 0
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
