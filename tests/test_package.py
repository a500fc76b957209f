"""``import transfer_cache`` as a user meets it: cheap (no TensorFlow, Keras or OpenVINO), and ``tc.extract``,
``tc.fit``, ``tc.predict`` and ``tc.merge`` the functions even once their modules of the same name are imported or
run.

Each check runs in a fresh interpreter: in this one, other tests have long imported those modules.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

STAGES = ("extract", "fit", "predict", "merge")


def _run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_import_starts_no_heavy_library():
    out = _run(
        """
        import sys
        import transfer_cache
        print(*sorted(m for m in ("tensorflow", "keras", "openvino") if m in sys.modules))
        """
    )
    assert out.strip() == ""


def test_the_functions_stay_functions_after_their_modules_are_imported():
    out = _run(
        f"""
        import sys
        import transfer_cache as tc
        import transfer_cache.extract, transfer_cache.fit, transfer_cache.predict, transfer_cache.merge
        for name in {STAGES!r}:
            module = sys.modules["transfer_cache." + name]
            assert getattr(tc, name) is getattr(module, name), (name, getattr(tc, name))
            assert callable(getattr(tc, name)) and module.__name__ == "transfer_cache." + name
        from transfer_cache import extract
        assert extract is sys.modules["transfer_cache.extract"].extract
        assert dir(tc) == sorted(tc.__all__)
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_the_functions_stay_functions_after_a_stage_ran_as_a_command():
    """What ``python -m transfer_cache.merge --help`` leaves behind, then the module imported under its own name."""
    out = _run(
        """
        import contextlib, io, runpy, sys
        import transfer_cache as tc
        sys.argv = ["transfer_cache.merge", "--help"]
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                runpy.run_module("transfer_cache.merge", run_name="__main__", alter_sys=True)
            except SystemExit as exit:
                assert exit.code == 0
        import transfer_cache.merge
        assert tc.merge is sys.modules["transfer_cache.merge"].merge
        print("ok")
        """
    )
    assert out.strip() == "ok"
