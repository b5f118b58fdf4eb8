"""Rules a bad input meets at the boundary: gray-level masks, argument ranges, backend
settings, pickle-only model folders."""

from __future__ import annotations

import argparse
import warnings

import cv2
import numpy as np
import pytest

from usgen_desktop.cli.argtypes import channel_list, float_range, fraction, int_range
from usgen_desktop.errors import ModelError, UsgenError
from usgen_desktop.io.masks import mask_to_ids


def test_gray_levels_that_are_regions_become_labels_with_a_sentence():
    m = np.zeros((30, 60), np.uint8)
    m[:, 20:40], m[:, 40:] = 128, 255
    notes: list[str] = []
    ids = mask_to_ids(m, "The mask 'm.png'", notes=notes)
    assert np.array_equal(np.unique(ids), [0, 1, 2])
    assert (ids[:, 25] == 1).all() and (ids[:, 50] == 2).all()
    assert len(notes) == 1 and "3 gray levels" in notes[0] and "m.png" in notes[0]
    with warnings.catch_warnings(record=True) as got:  # without a notes list: a warning
        warnings.simplefilter("always")
        mask_to_ids(m, "The mask 'm.png'")
    assert any("gray levels" in str(w.message) for w in got)


def test_blurred_binary_mask_is_still_thresholded_silently():
    big = np.zeros((128, 128), np.uint8)
    cv2.circle(big, (64, 64), 40, 255, -1)
    small = cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA)  # a few edge levels
    levels = np.unique(small)
    assert 2 < len(levels) <= 8
    notes: list[str] = []
    ids = mask_to_ids(small, notes=notes)
    assert set(np.unique(ids)) == {0, 1} and not notes


@pytest.mark.parametrize("parse, text, words", [
    (int_range(4, 64), "100000", "between 4 and 64"),
    (int_range(1), "0", "at least 1"),
    (int_range(1), "x", "not a whole number"),
    (float_range(0, 180), "nan", "not a finite number"),
    (float_range(0, 180), "-5", "at least 0"),
    (fraction(), "1.5", "below 1"),
    (fraction(), "0", "above 0"),
    (channel_list(), "3,5", "multiple of 8"),
    (channel_list(), "0,0", "multiple of 8"),
])
def test_argument_types_refuse_with_the_allowed_range(parse, text, words):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert words in str(info.value)


def test_argument_types_pass_good_values():
    assert int_range(4, 64)("10") == 10
    assert fraction()("0.2") == 0.2
    assert fraction(include_one=True)("1") == 1.0
    assert channel_list()("16,32,64") == (16, 32, 64)


def test_unknown_backend_setting_names_the_accepted_ones():
    from usgen_desktop.synthesis.request import backend_params, check_params

    check_params("speckle", {"frequency_mhz": 5, "probe": "linear"})
    with pytest.raises(UsgenError) as info:
        check_params("speckle", {"dynamic_range": 10})
    assert "did you mean 'dynamic_range_db'" in str(info.value)
    assert "frequency_mhz" in str(info.value)
    assert "sampler" in backend_params("sdm")


def test_pickle_only_folder_is_refused(tmp_path):
    from usgen_desktop.synthesis.weights import require_safetensors

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError) as info:
        require_safetensors(tmp_path, ("unet", "vae"))
    assert "safetensors" in str(info.value) and "pickle" in str(info.value)
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    require_safetensors(tmp_path, ("unet", "vae"))  # safetensors beside it: fine


def test_out_folder_refuses_a_file_and_an_unwritable_folder(tmp_path, monkeypatch):
    import os

    from usgen_desktop.cli.argtypes import out_folder
    from usgen_desktop.errors import ExportError

    (tmp_path / "f").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        out_folder(tmp_path / "f")
    with pytest.raises(ExportError, match="file is in the way"):
        out_folder(tmp_path / "f" / "sub")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # a read-only folder (tests run
    with pytest.raises(ExportError, match="permission denied"):  # as root, chmod cannot)
        out_folder(tmp_path / "ro")


def test_full_disk_is_one_sentence(tmp_path, monkeypatch, capsys):
    import errno

    from usgen_desktop.cli import main as cli_main
    from usgen_desktop.io import atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x"))

    monkeypatch.setattr(atomic, "write_bytes_atomic", full)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 255
    (tmp_path / "ds" / "masks").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "ds" / "masks" / "a.png"), mask)
    code = cli_main.main(["deform", "--masks", str(tmp_path / "ds"), "--out",
                          str(tmp_path / "out"), "--n", "1", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("usgen: error: The disk is full") and "Traceback" not in "".join(err)
