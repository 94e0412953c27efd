"""The collector pause around building a comparison's findings: paused inside, restored after (also on error),
left alone when something else had turned it off."""

from __future__ import annotations

import gc

import pytest

from reconcilers.model import gc_paused


def test_the_collector_is_paused_while_findings_are_built_and_resumes_after() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("the statement failed")
    assert gc.isenabled()


def test_a_collector_turned_off_elsewhere_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
