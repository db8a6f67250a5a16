"""A quiet start for the `tftransfer` command: TensorFlow's start-up lines hidden.

`import tensorflow` writes start-up lines from C++ straight to the process's
stderr (file descriptor 2): the absl "All log messages before
absl::InitializeLog()" notice, oneDNN's, the CUDA stub's and the CPU feature
guard's. In TensorFlow 2.21 `TF_CPP_MIN_LOG_LEVEL` hides only the last one, as
the others are logged through absl before TensorFlow reads the variable, so
the command also points file descriptor 2 at a temporary file while
TensorFlow loads. What was written there is replayed when the import fails.

`TF_ENABLE_ONEDNN_OPTS` is left as it is: it changes numerics, not logging.

A notebook or script opts in with `TFTRANSFER_QUIET=1` set before `import tftransfer`
(`quiet_session()`): for the whole process, only the known lines (`KNOWN_NOISE`) are
dropped from stderr, by a filter that lets every other line through.

This module imports nothing heavy: `tftransfer/__init__.py` runs it before it
imports TensorFlow, because every way into the command (the `tftransfer`
console script, `python -m tftransfer`) imports the package first.
"""

import os
import sys
import tempfile

# The level the command sets when the user has not: errors only.
QUIET_LOG_LEVEL = "3"


def invoked_as_command(argv=None, orig_argv=None):
    """Whether this process is the `tftransfer` command (console script or `-m`)."""
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.splitext(os.path.basename(str(argv[0])))[0] == "tftransfer":
        return True
    # `python [options] -m tftransfer ...`: while the package is imported, argv[0] is "-m".
    for index, item in enumerate(orig_argv[:-1]):
        if item == "-m":
            return orig_argv[index + 1] == "tftransfer"
    return False


def wants_quiet(argv=None, environ=None):
    """Whether to hide the start-up lines: no `--verbose`, and a TF log level above 0.

    A `TF_CPP_MIN_LOG_LEVEL` the user set is kept; 0 (show everything) keeps
    the lines too.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if "--verbose" in options:
        return False
    return environ.get("TF_CPP_MIN_LOG_LEVEL", QUIET_LOG_LEVEL).strip() not in ("0", "")


def quiet_start():
    """For the command: sets `TF_CPP_MIN_LOG_LEVEL=3` unless set, and imports TensorFlow
    with its start-up lines hidden. Does nothing for library users or with `--verbose`,
    unless they opt in with `TFTRANSFER_QUIET=1` (`quiet_session()`)."""
    if os.environ.get(QUIET_ENV, "").strip() == "1" and not invoked_as_command():
        # INFO lines hidden, warnings and errors kept; known lines filtered.
        if not os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip():
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
        quiet_session()
        return
    if not invoked_as_command() or not wants_quiet():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LOG_LEVEL)
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf8", "replace"))
            sys.stderr.flush()
            raise
        os.dup2(saved, 2)
        os.close(saved)


# --- notebooks and scripts: TFTRANSFER_QUIET=1 -------------------------------------------

#: The variable a notebook or script sets to "1", before `import tftransfer`, to opt in.
QUIET_ENV = "TFTRANSFER_QUIET"

#: Lines TensorFlow, TFLite and CUDA write to stderr on a normal run, with nothing to act on.
#: Only whole lines that match one of these are dropped; every other line passes.
KNOWN_NOISE = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"I\d{4} [0-9:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\..*",
    r"I\d{4} [0-9:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine.*",
    r"I\d{4} [0-9:. ]+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized .*",
    r"To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    r"compiler flags\.",
    r"W\d{4} [0-9:. ]+\d+ tf_tfl_flatbuffer_helpers\.cc:\d+\] Ignored "
    r"(output_format|drop_control_dependency)\.",
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
    r"E\d{4} [0-9:. ]+\d+ util\.cc:\d+\] oneDNN supports DT_INT64 only on platforms with "
    r"AVX-512\. Falling back to the default Eigen-based implementation if present\.",
)
#: Dropped only where the machine has no NVIDIA driver: there it says what is already known.
NO_GPU_NOISE = (
    r"E\d{4} [0-9:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*",
)
#: Python warnings and log records, by the start of their message.
KNOWN_WARNINGS = (
    r"\s*Warning: tf\.lite\.Interpreter is deprecated",
    r"`shuffle=True` was passed, but will be ignored since the data `x` was provided as a "
    r"tf\.data\.Dataset",
    # tqdm.auto, imported by KerasHub, in a Jupyter kernel without ipywidgets.
    r"IProgress not found\. Please update jupyter and ipywidgets",
)
KNOWN_LOG_RECORDS = ("Assets written to:",)


def noise_patterns(has_nvidia_driver=None):
    """The compiled whole-line patterns the quiet session drops.

    Example:

    >>> from tftransfer._startup import is_noise, noise_patterns
    >>> patterns = noise_patterns(has_nvidia_driver=False)
    >>> is_noise("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", patterns)
    True
    >>> is_noise("E0000 00:00:17.1  12 loader.cc:9] SavedModel load failed", patterns)
    False
    """
    import re

    if has_nvidia_driver is None:
        has_nvidia_driver = any(os.path.exists(path)
                                for path in ("/dev/nvidiactl", "/proc/driver/nvidia"))
    patterns = KNOWN_NOISE + (() if has_nvidia_driver else NO_GPU_NOISE)
    return [re.compile(pattern) for pattern in patterns]


def is_noise(line, patterns):
    """Whether a line of stderr (without its newline) is one of the known start-up lines."""
    line = line.rstrip("\r\n")
    return any(pattern.fullmatch(line) for pattern in patterns)


def filter_stream(source, sink, patterns):
    """Copies file descriptor `source` to `sink` until end of file, dropping known lines.

    Partial lines are held until their newline, except progress output (ending in a carriage
    return), which is passed on at once.
    """
    pending = b""
    while True:
        chunk = os.read(source, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = [line + b"\n" for line in lines
                if not is_noise(line.decode("utf8", "replace"), patterns)]
        if b"\r" in pending:
            head, _, pending = pending.rpartition(b"\r")
            kept.append(head + b"\r")
        if kept:
            os.write(sink, b"".join(kept))
    if pending and not is_noise(pending.decode("utf8", "replace"), patterns):
        os.write(sink, pending)


class _RecordFilter:
    """A `logging` filter that drops the records of `KNOWN_LOG_RECORDS`."""

    def filter(self, record):
        return not str(record.getMessage()).startswith(KNOWN_LOG_RECORDS)


def quiet_session():
    """Hides TensorFlow's known start-up and routine lines for the rest of this process.

    What a notebook or script gets with `TFTRANSFER_QUIET=1` set before `import tftransfer`:
    file descriptor 2 is passed through a small filter process (this file, run as a script)
    that drops only the whole lines of `KNOWN_NOISE`; every other line, an error above all,
    reaches stderr as it was written, and a crash loses nothing, since the filter reads on
    until the last writer is gone. Python warnings and `tensorflow` log records of
    `KNOWN_WARNINGS` and `KNOWN_LOG_RECORDS` are ignored. Called again, it does nothing.

    Example:

    >>> import os
    >>> os.environ["TFTRANSFER_QUIET"] = "1"  # in a notebook's first cell  # doctest: +SKIP
    >>> import tftransfer  # no TensorFlow start-up lines  # doctest: +SKIP
    """
    global _SESSION_FILTER
    import logging
    import subprocess
    import warnings

    if _SESSION_FILTER is not None:
        return
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("tensorflow").addFilter(_RecordFilter())
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    try:
        stderr = os.dup(2)
        try:
            process = subprocess.Popen([sys.executable, "-S", "-E", os.path.abspath(__file__)],
                                       stdin=read_end, stdout=stderr, close_fds=True,
                                       start_new_session=True)
        finally:
            os.close(stderr)
    except OSError:  # no interpreter to run it: keep stderr as it is
        os.close(read_end)
        os.close(write_end)
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    _SESSION_FILTER = process


_SESSION_FILTER = None


if __name__ == "__main__":  # the filter process of quiet_session()
    import signal

    # Ctrl-C and a kernel's interrupts are for the process it filters: this one ends when
    # the last writer closes the pipe, after passing on everything written to it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    filter_stream(0, 1, noise_patterns())
