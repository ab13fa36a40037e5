"""The private Lightning symbols the SIGTERM path (callbacks/interrupt_checkpoint.py)
relies on, named one by one: when a Lightning release moves one, this test says which
and what to adapt, instead of a preempted run misbehaving."""

import inspect
import signal
import threading

import pytest


def _ours_replaces_lightnings_handler():
    """its SIGTERM handler, which InterruptCheckpoint._take_sigterm replaces at on_train_start."""
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    source = inspect.getsource(_SignalConnector.register_signal_handlers)
    assert "SIGTERM" in source


def _child_observer():
    """_ChildProcessObserver (thread 'child-process-observer', its _run), which retire_worker_watcher retires."""
    from lightning.fabric.strategies.launchers import subprocess_script as launcher

    observer = launcher._ChildProcessObserver
    assert issubclass(observer, threading.Thread)
    assert 'name="child-process-observer"' in inspect.getsource(observer.__init__)
    assert "self._run()" in inspect.getsource(observer.run)  # the loop retire_worker_watcher ends


def _launcher_procs():
    """_SubprocessScriptLauncher.procs, the workers wait_for_workers waits for."""
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    assert "self.procs" in inspect.getsource(_SubprocessScriptLauncher.__init__)


def _sigterm_exception():
    """SIGTERMException, which InterruptCheckpoint raises on every rank at the same batch."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    assert issubclass(SIGTERMException, SystemExit)  # cli.main catches it as a SystemExit


@pytest.mark.parametrize("check", [_ours_replaces_lightnings_handler, _child_observer, _launcher_procs,
                                   _sigterm_exception], ids=lambda f: f.__name__.strip("_"))
def test_the_private_lightning_symbols_the_sigterm_path_uses_are_where_it_expects(check):
    import lightning

    try:
        check()
    except (ImportError, AttributeError, AssertionError, OSError, TypeError) as exc:
        pytest.fail(f"Lightning {lightning.__version__} changed what callbacks/interrupt_checkpoint.py relies on "
                    f"({check.__doc__ or check.__name__.strip('_')}: {exc!r}); adapt InterruptCheckpoint and "
                    "retire_worker_watcher/wait_for_workers to the new internals, rerun "
                    "tests/integration/test_untrusted_files_and_preemption.py, and widen pyproject.toml's "
                    "lightning bound", pytrace=False)
    assert signal.SIGTERM  # the signal itself, on this platform


def test_a_moved_symbol_is_named_with_what_to_adapt(monkeypatch):
    from lightning.fabric.strategies.launchers import subprocess_script

    monkeypatch.delattr(subprocess_script, "_ChildProcessObserver")
    with pytest.raises(pytest.fail.Exception, match=r"_ChildProcessObserver.*adapt InterruptCheckpoint"):
        test_the_private_lightning_symbols_the_sigterm_path_uses_are_where_it_expects(_child_observer)
