"""The soak's fault trigger inside the daemon: off unless STREAMER_FAULT_INJECT names a private folder of
this user; a trigger file fires its fault once; the model step is untouched without the variable."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from streamer.fault_inject import (
    ENV,
    FaultTrigger,
    FaultyTransform,
    InjectedFault,
    trigger_folder,
    with_fault_injection,
)
from streamer.frames import Frame
from streamer.prompts import PromptState
from streamer.transform import Passthrough


def private(tmp_path):
    folder = tmp_path / "faults"
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o700)
    return folder


def test_off_without_the_variable(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    model = Passthrough()
    assert with_fault_injection(model) is model


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda tmp: tmp / "missing", "No such file"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "not a folder"),
        (
            lambda tmp: (tmp / "shared").mkdir(mode=0o777) or os.chmod(tmp / "shared", 0o777) or tmp / "shared",
            "writable by group or others",
        ),
    ],
)
def test_unsafe_folders_leave_it_off(tmp_path, caplog, make, why):
    folder = make(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert trigger_folder({ENV: str(folder)}) is None
    assert why in caplog.text and "fault injection off" in caplog.text


def test_a_link_to_a_folder_is_refused(tmp_path, caplog):
    (tmp_path / "link").symlink_to(private(tmp_path))
    with caplog.at_level(logging.ERROR):
        assert trigger_folder({ENV: str(tmp_path / "link")}) is None
    assert "not a folder" in caplog.text


def test_each_trigger_file_fires_once_and_is_consumed(tmp_path, monkeypatch):
    folder = private(tmp_path)
    monkeypatch.setenv(ENV, str(folder))
    model = with_fault_injection(Passthrough())
    assert isinstance(model, FaultyTransform)
    model.trigger.poll_s = 0.0
    frame, prompt = Frame(np.zeros((4, 4, 3), np.uint8), 0.0, 0), PromptState("p")
    assert model.step(frame, prompt) == [frame]
    (folder / "model_step.exception").touch()
    with pytest.raises(InjectedFault):
        model.step(frame, prompt)
    assert not (folder / "model_step.exception").exists()
    assert model.step(frame, prompt) == [frame]
    (folder / "model_step.oom").write_text("contents are never read")
    with pytest.raises(torch.cuda.OutOfMemoryError, match="injected"):
        model.step(frame, prompt)
    (folder / "model_step.unknown").touch()  # only the fixed kinds exist
    assert model.step(frame, prompt) == [frame]
    assert model.trigger.fired == ["model_step.exception", "model_step.oom"]


def test_the_folder_is_read_at_most_every_poll_interval(tmp_path):
    trigger = FaultTrigger(private(tmp_path), poll_s=60.0)
    assert trigger.take("model_step") is None  # looked now
    (trigger.folder / "model_step.exception").touch()
    assert trigger.take("model_step") is None  # not looked again within the minute: no scandir per frame
