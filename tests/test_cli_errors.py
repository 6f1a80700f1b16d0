"""The command line's errors: one line ``error: …`` naming what and where, the exit status
(1 for errors, usage errors included; 130 after Ctrl-C), devices closed on every path, no traceback;
and ``nibble run --program`` (a compiled program without its model)."""
import errno
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from nibble.cli import cli

SEED = 4242
DIGITS = "models/digits/digits_cnn.onnx"
CALIB = "models/digits/calib_x.npy"
TEST_X = "models/digits/test_x.npy"
TEST_Y = "models/digits/test_y.npy"
NIBBLE = pathlib.Path(sys.executable).with_name("nibble")


def _invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, prog_name="nibble")


def _one_error(r, status=1):
    """The single ``error:`` line of a failed command (asserts the format and the status)."""
    assert r.exit_code == status, (r.exit_code, r.output, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The digits CNN compiled by ``nibble compile``."""
    path = tmp_path_factory.mktemp("cli") / "digits.npz"
    r = _invoke("compile", DIGITS, "--calib", CALIB, "-o", path)
    assert r.exit_code == 0, r.output
    return path


@pytest.fixture
def closes(monkeypatch):
    """Records every Device opened and closed."""
    from nibble.host import driver
    opened, closed = [], []
    init, close = driver.Device.__init__, driver.Device.close

    def _init(self, *a, **k):
        init(self, *a, **k)
        opened.append(self)

    def _close(self, *a, **k):
        closed.append(self)
        return close(self, *a, **k)
    monkeypatch.setattr(driver.Device, "__init__", _init)
    monkeypatch.setattr(driver.Device, "close", _close)
    return opened, closed


# ------------------------------------------------------------------------------------------------
# --program

def test_program_runs_like_the_model(program, tmp_path):
    """``run --program`` gives the outputs of ``run MODEL`` (same calibration), and omits the
    float reference."""
    y_model, y_prog = tmp_path / "ym.npy", tmp_path / "yp.npy"
    r = _invoke("run", DIGITS, "--calib", CALIB, "--inputs", TEST_X, "--labels", TEST_Y, "--device", "golden",
                "--json", "--out", y_model)
    assert r.exit_code == 0, r.output
    with_model = json.loads(r.stdout)
    r = _invoke("run", "--program", program, "--inputs", TEST_X, "--labels", TEST_Y, "--device", "golden",
                "--json", "--out", y_prog)
    assert r.exit_code == 0, r.output
    without = json.loads(r.stdout)
    assert np.array_equal(np.load(y_model), np.load(y_prog))
    assert "float_accuracy" not in without and "model" not in without and without["program"] == str(program)
    assert without["golden_accuracy"] == with_model["golden_accuracy"] > 0.95
    assert without["images"] == with_model["images"] == 360
    assert without["winograd_layers"] == with_model["winograd_layers"]


def test_program_help_says_no_float_reference():
    r = _invoke("run", "--help")
    assert r.exit_code == 0 and "--program" in r.output
    assert "no float" in " ".join(r.output.split()) and "float_accuracy" in r.output


@pytest.mark.parametrize("args,want", [
    (["run", DIGITS, "--program", "{p}", "--inputs", TEST_X], "either a MODEL"),
    (["run", "--inputs", TEST_X], "give a MODEL (.onnx) to compile or --program FILE"),
    (["run", "--program", "{p}", "--inputs", TEST_X, "--calib", CALIB], "--calib applies to compiling a MODEL"),
    (["run", "--program", "{p}", "--inputs", TEST_X, "--winograd", "direct"], "--winograd applies"),
    (["run", "--program", "{p}", "--inputs", TEST_X, "--deconv", "tdc"], "--deconv applies"),
])
def test_program_option_conflicts(args, want, program):
    line = _one_error(_invoke(*[a.format(p=program) for a in args], "--device", "golden"))
    assert want in line, line


def test_program_config_must_match(program, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"m": 32}))
    line = _one_error(_invoke("run", "--program", program, "--inputs", TEST_X, "--device", "golden",
                              "--config", cfg))
    assert f"configuration '{cfg}'" in line and "is not the configuration the program" in line
    cfg.write_text(json.dumps({"m": 16}))          # the same configuration: accepted
    assert _invoke("run", "--program", program, "--inputs", TEST_X, "--device", "golden",
                   "--config", cfg).exit_code == 0


@pytest.mark.parametrize("content,want", [
    ({"m": 1.5}, "m must be an integer, not 1.5"), ({"winograd": 1}, "winograd must be true or false"),
    ({"m": 7}, "EngineConfig.m"), ({"colour": 3}, "unknown EngineConfig field"), ("[1,", "not valid JSON"),
])
def test_bad_config(content, want, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(content if isinstance(content, str) else json.dumps(content))
    line = _one_error(_invoke("run", DIGITS, "--inputs", TEST_X, "--device", "golden", "--config", cfg))
    assert line.startswith(f"error: configuration '{cfg}': ") and want in line, line


def _edit_program(src, dst, edit):
    """A copy of a program file with its metadata edited and the checksum recomputed."""
    import io
    import zipfile
    from nibble.host.program import program_checksum
    with zipfile.ZipFile(src) as z:
        arr = {n[:-4]: np.load(io.BytesIO(z.read(n))) for n in z.namelist()}
    meta = json.loads(arr["meta"].tobytes())
    edit(meta)
    mb = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(dst, meta=mb, params=arr["params"], weights=arr["weights"],
             checksum=np.frombuffer(program_checksum(mb, arr["params"], arr["weights"]), np.uint8))


@pytest.mark.parametrize("case", ["truncated", "not a zip", "missing", "no layers", "negative cout", "flipped"])
def test_bad_program_file(case, program, tmp_path):
    bad = tmp_path / "bad.npz"
    data = program.read_bytes()
    if case == "truncated":
        bad.write_bytes(data[:len(data) // 2])
    elif case == "not a zip":
        bad.write_text("hello")
    elif case == "no layers":
        _edit_program(program, bad, lambda m: m.update(layers=[]))
    elif case == "negative cout":
        _edit_program(program, bad, lambda m: m["layers"][2].update(cout=-3))
    elif case == "flipped":
        b = bytearray(data)
        b[len(b) // 3] ^= 0x40
        bad.write_bytes(bytes(b))
    line = _one_error(_invoke("run", "--program", bad, "--inputs", TEST_X, "--device", "golden"))
    assert line.startswith(f"error: {bad}: "), line
    assert {"truncated": "not a Nibble program file", "not a zip": "not a zip archive",
            "missing": "cannot read the file", "no layers": "layers: no layers",
            "negative cout": "layers[2].cout: expected a positive integer, got -3",
            "flipped": ""}[case] in line


# ------------------------------------------------------------------------------------------------
# bad .npy inputs

def _bad_npy(case, path):
    rng = np.random.default_rng(SEED)
    good = rng.uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    if case == "empty":
        np.save(path, good[:0])
    elif case == "0-d":
        np.save(path, np.float32(0.5))
    elif case == "structured":
        np.save(path, np.zeros(4, dtype=[("a", "<f4"), ("b", "<i4")]))
    elif case == "complex":
        np.save(path, good.astype(np.complex64))
    elif case == "object":
        np.save(path, np.array([good, "x"], dtype=object), allow_pickle=True)
    elif case == "string":
        np.save(path, np.array(["a", "b"]))
    elif case == "nan":
        good[2, 0, 3, 4] = np.nan
        np.save(path, good)
    elif case == "inf":
        good[1, 0, 0, 0] = -np.inf
        np.save(path, good)
    elif case == "not npy":
        path.write_text("0.1 0.2 0.3\n")
    elif case == "npz":
        with open(path, "wb") as f:
            np.savez(f, x=good)
    elif case == "pickle":
        import pickle
        path.write_bytes(pickle.dumps(good))
    elif case == "truncated":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:-100])
    elif case == "bad header":
        np.save(path, good)
        raw = path.read_bytes()
        path.write_bytes(raw[:10] + b"{'descr': 'zz', 'fortran_order': False, }".ljust(len(raw[10:128]) - 1)
                         + b"\n" + raw[128:])
    elif case == "wrong shape":
        np.save(path, rng.uniform(0, 1, (4, 1, 9, 8)))
    elif case == "flat":
        np.save(path, rng.uniform(0, 1, 64))
    elif case == "missing":
        pass
    else:
        raise AssertionError(case)


BAD_NPY = {"empty": "empty array", "0-d": "0-d array", "structured": "structured (record) dtype",
           "complex": "complex dtype", "object": "object dtype", "string": "string dtype",
           "nan": "non-finite value nan at index (2, 0, 3, 4)", "inf": "non-finite value -inf at index (1, 0, 0, 0)",
           "not npy": "not a .npy file", "npz": "a zip archive (.npz), not a .npy array",
           "pickle": "not a .npy file", "truncated": "truncated", "bad header": "not a readable .npy file",
           "wrong shape": "does not match the model's input (1, 8, 8)", "flat": "does not match the model's input",
           "missing": "cannot read the file"}


@pytest.mark.parametrize("case", list(BAD_NPY))
def test_bad_inputs_program(case, program, tmp_path):
    bad = tmp_path / "x.npy"
    _bad_npy(case, bad)
    line = _one_error(_invoke("run", "--program", program, "--inputs", bad, "--device", "golden"))
    assert line.startswith(f"error: inputs '{bad}': ") and BAD_NPY[case] in line, line


@pytest.mark.parametrize("case", ["nan", "structured", "wrong shape", "empty"])
def test_bad_inputs_model(case, tmp_path):
    """With a MODEL the inputs also calibrate: their problem is still named as the inputs'."""
    bad = tmp_path / "x.npy"
    _bad_npy(case, bad)
    line = _one_error(_invoke("run", DIGITS, "--inputs", bad, "--device", "golden"))
    assert line.startswith(f"error: inputs '{bad}': ") and BAD_NPY[case] in line, line


@pytest.mark.parametrize("case", ["complex", "not npy", "0-d"])
def test_bad_calibration_data(case, tmp_path):
    bad = tmp_path / "c.npy"
    _bad_npy(case, bad)
    line = _one_error(_invoke("compile", DIGITS, "--calib", bad, "-o", tmp_path / "p.npz"))
    assert line.startswith(f"error: calibration data '{bad}': ") and BAD_NPY[case] in line, line
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("labels,want", [
    (np.full(360, 0.5), "expected integer class labels"), (np.zeros(359, np.int64), "359 labels for 360 inputs"),
    (np.zeros((360, 1), np.int64), "expected a 1-D array of class labels"),
])
def test_bad_labels(labels, want, program, tmp_path):
    bad = tmp_path / "y.npy"
    np.save(bad, labels)
    line = _one_error(_invoke("run", "--program", program, "--inputs", TEST_X, "--labels", bad, "--device", "golden"))
    assert f"labels '{bad}'" in line and want in line, line


def test_bad_reference(program, tmp_path):
    bad = tmp_path / "r.npy"
    np.save(bad, np.zeros((360, 11)))
    line = _one_error(_invoke("run", "--program", program, "--inputs", TEST_X, "--reference", bad,
                              "--device", "golden"))
    assert f"reference outputs '{bad}': shape (360, 11) does not match the program's outputs (360, 10)" in line


# ------------------------------------------------------------------------------------------------
# compiler, device and link errors; usage errors; unexpected exceptions

def test_compile_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 10)
    line = _one_error(_invoke("compile", bad, "--calib", CALIB, "-o", tmp_path / "p.npz"))
    assert "not a valid ONNX model" in line


@pytest.mark.parametrize("error", ["DeviceError", "LinkError"])
def test_device_and_link_errors(error, program, monkeypatch, closes):
    from nibble.host import driver, link
    cls = getattr(driver, error, None) or getattr(link, error)

    def fail(self, x):
        raise cls(f"{error} in layer 2\nsecond line")
    monkeypatch.setattr(driver.Device, "run", fail)
    line = _one_error(_invoke("run", "--program", program, "--inputs", TEST_X, "--device", "golden"))
    assert line == f"error: {error} in layer 2; second line"
    opened, closed = closes
    assert opened and all(d in closed for d in opened)


def test_usage_errors_are_one_line():
    line = _one_error(_invoke("run", "--frobnicate"))
    assert "--frobnicate" in line and "nibble run --help" in line
    line = _one_error(_invoke("frobnicate"))
    assert "frobnicate" in line
    line = _one_error(_invoke("run", DIGITS))
    assert "--inputs" in line


def test_unexpected_exception(program, monkeypatch, closes):
    from nibble.host import driver

    def boom(self, x):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(driver.Device, "run", boom)
    args = ("run", "--program", program, "--inputs", TEST_X, "--device", "golden")
    line = _one_error(_invoke(*args))
    assert line == "error: internal error: ZeroDivisionError: division by zero (set NIBBLE_DEBUG=1 to see the " \
                   "traceback)"
    r = _invoke(*args, env={"NIBBLE_DEBUG": "1"})
    assert r.exit_code == 1 and isinstance(r.exception, ZeroDivisionError)
    opened, closed = closes
    assert len(opened) == 2 and all(d in closed for d in opened)


# ------------------------------------------------------------------------------------------------
# Ctrl-C

@pytest.mark.parametrize("where", ["Device.run", "Device.load", "Program.load", "compile_model", "np.save"])
def test_interrupt(where, program, monkeypatch, closes, tmp_path):
    from nibble.host import compiler, driver, program as prog

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    target = {"Device.run": (driver.Device, "run"), "Device.load": (driver.Device, "load"),
              "Program.load": (prog.Program, "load"), "compile_model": (compiler, "compile_model"),
              "np.save": (np, "save")}[where]
    monkeypatch.setattr(*target, interrupt)
    args = ["run", "--inputs", TEST_X, "--device", "golden", "--out", tmp_path / "y.npy"]
    args += [DIGITS, "--calib", CALIB] if where == "compile_model" else ["--program", program]
    r = _invoke(*args)
    assert r.exit_code == 130 and r.stderr == "error: interrupted\n" and r.stdout == "", r.output
    opened, closed = closes
    assert all(d in closed for d in opened)


def test_interrupt_while_saving_a_program(monkeypatch, tmp_path):
    """Ctrl-C while ``compile`` writes the program: exit 130, and no partial file is left."""
    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", interrupt)
    out = tmp_path / "p.npz"
    r = _invoke("compile", DIGITS, "--calib", CALIB, "-o", out)
    assert r.exit_code == 130 and r.stderr == "error: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_sigint_ends_a_long_run(program, tmp_path):
    """SIGINT to ``nibble run --device golden`` on a long input list: ``error: interrupted``,
    exit status 130. The inputs come through a FIFO, so the signal is sent only once the command
    reads them (after its imports) — then it is well inside the run."""
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    x = np.tile(np.load(TEST_X), (30, 1, 1, 1))       # 10,800 images: about 20 s of golden model
    # SIGINT at its default disposition, as in a terminal (a launcher in the background may have
    # set it to ignored, which the child would inherit)
    proc = subprocess.Popen([str(NIBBLE), "run", "--program", str(program), "--inputs", str(fifo),
                             "--device", "golden"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never opened its inputs"
            time.sleep(0.05)
        os.set_blocking(fd, True)
        buf = io.BytesIO()
        np.save(buf, x)
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.splitlines() == ["error: interrupted"] and out == "", err
