"""Image and mask readers on files the tests write: every format, and every bad input."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import lesion_pair
from usgen_desktop.core.labels import load_preset
from usgen_desktop.errors import ImageReadError, MaskMismatchError, UnsupportedFormatError
from usgen_desktop.io import (
    fill_outline,
    read_image,
    read_itksnap_labels,
    read_mask,
    write_itksnap_labels,
    write_metaimage,
)


@pytest.fixture
def img8():
    return lesion_pair(48, 64, seed=3)[0]


@pytest.fixture
def img16(img8):
    return img8.astype(np.uint16) * 200 + 17


# -- raster formats -----------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_lossless_8bit_roundtrip(tmp_path, img8, ext):
    path = tmp_path / f"a{ext}"
    cv2.imwrite(str(path), img8)
    im = read_image(path)
    assert im.pixels.dtype == np.uint8 and np.array_equal(im.pixels, img8)
    assert not im.was_color and im.source == path


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_stays_16bit(tmp_path, img16, ext):
    path = tmp_path / f"a{ext}"
    cv2.imwrite(str(path), img16)
    im = read_image(path)
    assert im.pixels.dtype == np.uint16 and im.bit_depth == 16
    assert np.array_equal(im.pixels, img16)


def test_jpeg_reads_close_to_original(tmp_path, img8):
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), img8, [cv2.IMWRITE_JPEG_QUALITY, 95])
    im = read_image(path)
    assert im.shape == img8.shape
    assert np.abs(im.pixels.astype(int) - img8).mean() < 4


def test_rgb_with_equal_channels_is_gray_not_colour(tmp_path, img8):
    path = tmp_path / "gray_as_rgb.png"
    Image.fromarray(np.dstack([img8] * 3)).save(path)
    im = read_image(path)
    assert not im.was_color and np.array_equal(im.pixels, img8)


def test_real_colour_is_converted_and_noted(tmp_path, img8):
    rgb = np.dstack([img8, img8 // 2, np.zeros_like(img8)])
    rgb[5:10, 5:10] = (255, 0, 0)  # a Doppler-like red patch
    path = tmp_path / "doppler.png"
    Image.fromarray(rgb).save(path)
    im = read_image(path)
    assert im.was_color and im.pixels.ndim == 2
    # Luma of pure red (0.299 * 255) proves channel order was RGB, not BGR.
    assert im.pixels[7, 7] == round(0.299 * 255)


def test_rgba_image(tmp_path, img8):
    rgba = np.dstack([img8] * 3 + [np.full_like(img8, 255)])
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert np.array_equal(read_image(path).pixels, img8)


def test_multipage_tiff_frame_and_spacing(tmp_path, img8):
    import tifffile

    stack = np.stack([img8, 255 - img8, img8 // 2])
    path = tmp_path / "cine.tif"
    tifffile.imwrite(path, stack, resolution=(20.0, 10.0), resolutionunit="CENTIMETER")
    assert np.array_equal(read_image(path).pixels, img8)
    im = read_image(path, frame=2)
    assert np.array_equal(im.pixels, img8 // 2) and im.meta["frames"] == 3
    assert im.pixel_spacing == pytest.approx((1.0, 0.5))  # (row, col) mm
    with pytest.raises(ImageReadError, match="has 3 frames"):
        read_image(path, frame=3)


# -- DICOM ----------------------------------------------------------------------------------
def _write_dicom(path, frames: np.ndarray, spacing=(0.2, 0.3), photometric="MONOCHROME2",
                 rgb: bool = False):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    n = frames.shape[0] if frames.ndim == (4 if rgb else 3) else 1
    ds.Rows, ds.Columns = frames.shape[-3:-1] if rgb else frames.shape[-2:]
    if n > 1:
        ds.NumberOfFrames = n
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = frames.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = list(spacing)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_dicom_cine_chosen_frame_and_spacing(tmp_path, img8):
    frames = np.stack([img8, 255 - img8, img8 // 3])
    path = tmp_path / "loop.dcm"
    _write_dicom(path, frames)
    first = read_image(path)
    assert np.array_equal(first.pixels, img8) and first.meta["frames"] == 3
    im = read_image(path, frame=1)
    assert np.array_equal(im.pixels, 255 - img8)
    assert im.pixel_spacing == pytest.approx((0.2, 0.3))
    with pytest.raises(ImageReadError, match="frame 7 does not exist"):
        read_image(path, frame=7)


def test_dicom_single_16bit_without_extension(tmp_path, img16):
    path = tmp_path / "IM0001"  # scanners often write no extension: detected by 'DICM'
    _write_dicom(path, img16)
    im = read_image(path)
    assert im.pixels.dtype == np.uint16 and np.array_equal(im.pixels, img16)


def test_dicom_monochrome1_is_inverted(tmp_path, img8):
    path = tmp_path / "m1.dcm"
    _write_dicom(path, img8, photometric="MONOCHROME1")
    im = read_image(path)
    assert np.array_equal(im.pixels, 255 - img8)


def test_dicom_colour_is_converted(tmp_path, img8):
    rgb = np.dstack([img8, img8, img8])
    rgb[4:8, 4:8] = (255, 0, 0)  # colour Doppler
    path = tmp_path / "rgb.dcm"
    _write_dicom(path, rgb, photometric="RGB", rgb=True)
    im = read_image(path)
    assert im.was_color and im.pixels[5, 5] == round(0.299 * 255) and im.pixels[20, 20] == img8[20, 20]


def test_truncated_dicom(tmp_path, img8):
    path = tmp_path / "cut.dcm"
    _write_dicom(path, np.stack([img8, img8]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - img8.size])
    with pytest.raises(ImageReadError, match="cut.dcm"):
        read_image(path, frame=1)


# -- NIfTI ---------------------------------------------------------------------------------
def test_nifti_2d_and_slice(tmp_path, img8):
    import nibabel as nib

    two_d = nib.Nifti1Image(img8.T.copy(), np.eye(4))
    two_d.header.set_zooms((0.4, 0.25))
    nib.save(two_d, tmp_path / "a.nii.gz")
    im = read_image(tmp_path / "a.nii.gz")
    assert np.array_equal(im.pixels, img8)
    assert im.pixel_spacing == pytest.approx((0.25, 0.4))  # (row = y, col = x)

    vol = np.stack([img8.T, (255 - img8).T, (img8 // 2).T], axis=2)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii")
    assert np.array_equal(read_image(tmp_path / "v.nii", frame=2).pixels, img8 // 2)
    assert np.array_equal(read_image(tmp_path / "v.nii").pixels, 255 - img8)  # middle slice


def test_corrupt_nifti(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ImageReadError, match="bad.nii.gz"):
        read_image(tmp_path / "bad.nii.gz")


# -- MetaImage -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.mhd", "a.mha"])
def test_metaimage_2d(tmp_path, img16, name):
    write_metaimage(tmp_path / name, img16, spacing=(0.5, 0.25))
    im = read_image(tmp_path / name)
    assert im.pixels.dtype == np.uint16 and np.array_equal(im.pixels, img16)
    assert im.pixel_spacing == pytest.approx((0.5, 0.25))


def test_metaimage_volume_slice_and_compressed(tmp_path, img8):
    vol = np.stack([img8, 255 - img8, img8 // 2])  # (z, y, x)
    write_metaimage(tmp_path / "v.mhd", vol)
    assert np.array_equal(read_image(tmp_path / "v.mhd", frame=0).pixels, img8)
    header = (
        "ObjectType = Image\nNDims = 2\nCompressedData = True\nElementType = MET_UCHAR\n"
        f"DimSize = {img8.shape[1]} {img8.shape[0]}\nElementSpacing = 0.3 0.3\n"
        "ElementDataFile = LOCAL\n"
    )
    (tmp_path / "z.mha").write_bytes(header.encode() + zlib.compress(img8.tobytes()))
    assert np.array_equal(read_image(tmp_path / "z.mha").pixels, img8)


def test_metaimage_missing_or_short_data(tmp_path, img8):
    write_metaimage(tmp_path / "a.mhd", img8)
    raw = tmp_path / "a.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / "a.mhd")
    raw.unlink()
    with pytest.raises(ImageReadError, match="missing"):
        read_image(tmp_path / "a.mhd")


# -- bad input -----------------------------------------------------------------------------
def test_bad_files_raise_one_sentence_naming_the_file(tmp_path, img8, capfd):
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    ok, buf = cv2.imencode(".png", img8)
    flipped = bytearray(buf.tobytes())
    for i in range(60, 120):
        flipped[i] ^= 0x5A
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.xyz").write_text("hello")
    ok, buf = cv2.imencode(".png", img8)
    (tmp_path / "half.png").write_bytes(buf.tobytes()[: len(buf) // 2])
    ok, buf = cv2.imencode(".jpg", img8)
    (tmp_path / "half.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    for name in ("junk.png", "empty.jpg", "half.png", "half.jpg", "flipped.png"):
        with pytest.raises(ImageReadError) as info:
            read_image(tmp_path / name)
        msg = str(info.value)
        assert name in msg and "\n" not in msg and "Traceback" not in msg
    with pytest.raises(UnsupportedFormatError, match="notes.xyz"):
        read_image(tmp_path / "notes.xyz")
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    assert "libpng" not in capfd.readouterr().err  # no decoder noise on the terminal


# -- masks ---------------------------------------------------------------------------------
def test_binary_and_index_masks(tmp_path):
    m = np.zeros((30, 40), np.uint8)
    m[5:15, 5:15] = 255
    cv2.imwrite(str(tmp_path / "bin.png"), m)
    assert read_mask(tmp_path / "bin.png").ids() == [0, 1]
    idx = np.zeros((30, 40), np.uint8)
    idx[:10], idx[10:20, :5], idx[20:, :3] = 2, 5, 1
    cv2.imwrite(str(tmp_path / "idx.png"), idx)
    assert np.array_equal(read_mask(tmp_path / "idx.png").data, idx)


def test_busi_style_mask_modes(tmp_path):
    m = np.zeros((30, 40), bool)
    m[3:9, 4:20] = True
    Image.fromarray(m).convert("1").save(tmp_path / "one.png")
    Image.fromarray(np.dstack([m * 255] * 3).astype(np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([m * 255] * 3 + [np.full(m.shape, 255)]).astype(np.uint8),
                    "RGBA").save(tmp_path / "rgba.png")
    cv2.imwrite(str(tmp_path / "b16.png"), m.astype(np.uint16) * 65535)
    for name in ("one.png", "rgb.png", "rgba.png", "b16.png"):
        assert np.array_equal(read_mask(tmp_path / name).data, m.astype(np.uint8)), name


def test_palette_png_keeps_its_indices_as_ids(tmp_path):
    idx = np.zeros((20, 30), np.uint8)
    idx[2:8], idx[10:15] = 1, 2
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)  # VOC-like colours
    im.save(tmp_path / "voc.png")
    assert np.array_equal(read_mask(tmp_path / "voc.png").data, idx)


def test_colour_coded_masks(tmp_path):
    schema = load_preset("echo")  # LV cavity, sector, myocardium, left atrium by colour
    ids = np.zeros((20, 30), np.uint8)
    ids[2:6], ids[8:12], ids[14:18, :10] = 1, 3, 4
    lut = np.zeros((256, 3), np.uint8)
    for lab in schema.labels:
        lut[lab.id] = lab.color
    Image.fromarray(lut[ids]).save(tmp_path / "coded.png")
    assert np.array_equal(read_mask(tmp_path / "coded.png", schema=schema).data, ids)
    unknown = read_mask(tmp_path / "coded.png").data  # no schema: ids by colour order
    assert len(np.unique(unknown)) == 4 and np.array_equal(unknown == 0, ids == 0)
    red = np.zeros((20, 30, 3), np.uint8)
    red[5:10, 5:10] = (255, 0, 0)  # a binary mask drawn in red
    Image.fromarray(red).save(tmp_path / "red.png")
    assert read_mask(tmp_path / "red.png", schema=load_preset("busi")).ids() == [0, 1]


def test_lossy_binary_mask_is_thresholded(tmp_path):
    m = np.zeros((64, 64), np.uint8)
    cv2.circle(m, (32, 32), 15, 255, -1)
    cv2.imwrite(str(tmp_path / "m.jpg"), m, [cv2.IMWRITE_JPEG_QUALITY, 60])
    got = read_mask(tmp_path / "m.jpg").data
    assert set(np.unique(got)) == {0, 1}
    assert abs(int(got.sum()) - int((m > 0).sum())) < 40


def test_mask_of_wrong_size_names_both_sizes(tmp_path):
    cv2.imwrite(str(tmp_path / "m.png"), np.zeros((30, 40), np.uint8))
    with pytest.raises(MaskMismatchError) as info:
        read_mask(tmp_path / "m.png", shape=(48, 64))
    assert "40x30" in str(info.value) and "64x48" in str(info.value)


def test_fill_outline_closed_and_with_gap():
    solid = np.zeros((100, 120), np.uint8)
    cv2.ellipse(solid, (60, 50), (40, 25), 20, 0, 360, 1, -1)
    line = np.zeros_like(solid)
    cv2.ellipse(line, (60, 50), (40, 25), 20, 0, 360, 1, 1)
    filled = fill_outline(line)
    assert abs(int(filled.sum()) - int(solid.sum())) < 0.05 * solid.sum()
    gap = line.copy()
    gap[:, 55:65] = 0  # the drawn outline does not close
    refit = fill_outline(gap)
    inter = (refit & solid.astype(bool)).sum()
    assert 2 * inter / (refit.sum() + solid.sum()) > 0.9


# -- ITK-SNAP label files --------------------------------------------------------------------
def test_itksnap_roundtrip(tmp_path):
    schema = load_preset("echo").with_visibility(3, False)
    write_itksnap_labels(schema, tmp_path / "labels.txt")
    text = (tmp_path / "labels.txt").read_text()
    assert '"Clear Label"' in text and '"LV cavity"' in text
    back = read_itksnap_labels(tmp_path / "labels.txt")
    assert back.ids == schema.ids
    for lab in schema.foreground:
        got = back.by_id(lab.id)
        assert (got.name, got.color, got.visible) == (lab.name, lab.color, lab.visible)


def test_itksnap_hand_written_file(tmp_path):
    (tmp_path / "s.txt").write_text(
        "# comment\n"
        '    0     0    0    0        0  0  0    "Clear Label"\n'
        '    1   255    0    0        1  1  1    "Tumour core"\n'
        '    7     0  255    0      0.5  0  1    "Oedema"\n'
    )
    s = read_itksnap_labels(tmp_path / "s.txt")
    assert s.ids == [0, 1, 7] and s.by_id(1).name == "Tumour core"
    assert s.by_id(7).color == (0, 255, 0) and not s.by_id(7).visible
    (tmp_path / "bad.txt").write_text("1 2 three\n")
    with pytest.raises(Exception, match="Line 1"):
        read_itksnap_labels(tmp_path / "bad.txt")
