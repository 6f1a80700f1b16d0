"""The fuzz corpus of ``scripts/fuzz_models.py`` through the compiler (issue #9).

Every case must either compile or raise ``CompileError``: no other exception (a traceback), no
crash, no hang (each case has ``TIME_LIMIT`` seconds), no program compiled with non-finite or
out-of-range constants, or from a model whose constants are not finite, and every compiled case's
golden output must agree with ONNX Runtime (``fuzz_models.compare_with_ort``). The cases run in a child
process (``fuzz_models.py --run``, warnings as errors, address space limited to ``MEMORY_LIMIT``)
that is killed and restarted after the case that hangs or crashes it.
"""
import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import fuzz_models  # noqa: E402

SEED = fuzz_models.DEFAULT_SEED
N_CASES = 3000
TIME_LIMIT = 20.0                 # seconds per case (the slowest takes about 0.3 s)
MEMORY_LIMIT = 6 << 30            # bytes of address space for the child


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _start(seed, first, count, stderr):
    env = dict(os.environ, PYTHONWARNINGS="error", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "fuzz_models.py"), "--run", "--seed", str(seed),
                             "-n", str(count), "--start", str(first)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=stderr, preexec_fn=_limit_memory, text=True)


def run_corpus(n=N_CASES, seed=SEED):
    """All cases' results ``{i: {"status", "detail", "name", "seconds"}}``; a case that hangs or
    kills the child is ``"hang"`` / ``"crash"`` (with the end of the child's stderr)."""
    results, i = {}, 0
    while i < n:
        err = tempfile.TemporaryFile("w+")
        proc = _start(seed, i, n - i, err)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            while i < n:
                if not sel.select(timeout=TIME_LIMIT):
                    results[i] = {"status": "hang", "detail": f"no result within {TIME_LIMIT} s", "name": str(i)}
                    i += 1
                    break
                line = proc.stdout.readline()
                if not line:
                    proc.wait()
                    err.seek(0)
                    results[i] = {"status": "crash", "detail": f"the child exited with {proc.returncode}:\n"
                                  + err.read()[-3000:], "name": str(i)}
                    i += 1
                    break
                r = json.loads(line)
                assert r["i"] == i, (r["i"], i)
                results[i] = r
                i += 1
        finally:
            sel.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            err.close()
    return results


def test_fuzz_corpus_compiles_or_raises_compile_error():
    t = time.perf_counter()
    results = run_corpus()
    seconds = time.perf_counter() - t
    counts = {s: sum(r["status"] == s for r in results.values()) for s in ("compiled", "rejected", "failed", "hang",
                                                                          "crash")}
    print(f"\nfuzz corpus: seed {SEED}, {len(results)} cases: {counts['compiled']} compiled, {counts['rejected']} "
          f"rejected (CompileError), {counts['failed']} failed, {counts['hang']} hangs, {counts['crash']} crashes; "
          f"{seconds:.1f} s")
    bad = [r for r in results.values() if r["status"] not in ("compiled", "rejected")]
    assert not bad, "\n\n".join(f"{r['name']}: {r['status']}\n{r['detail']}" for r in bad[:5])
    assert len(results) == N_CASES
    assert counts["compiled"] >= 200 and counts["rejected"] >= 1000      # the corpus reaches the whole pipeline


def test_cases_are_deterministic_and_seeded():
    a = list(fuzz_models.cases(SEED, 12))
    assert a == list(fuzz_models.cases(SEED, 12))
    assert a[5:] == list(fuzz_models.cases(SEED, 7, start=5))      # case i depends on (seed, i) only
    assert [d for _, d in fuzz_models.cases(SEED + 1, 12)] != [d for _, d in a]
    assert len({name.split("-")[1] for name, _ in a}) == 3         # the three shipped models in turn


def test_script_writes_the_corpus(tmp_path):
    fuzz_models.main(["--seed", str(SEED), "-n", "6", "-o", str(tmp_path)])
    files = sorted(tmp_path.iterdir())
    assert len(files) == 6 and files[0].name.startswith("00000-digits-")
    assert files[0].read_bytes() == next(fuzz_models.cases(SEED, 1))[1]
