"""JAXA's ALOS-2 PALSAR-2 25 m mosaic tiles as delivered (issue 14).

Synthetic tiles in the real format (HH uint16 DN with no data 1, the uint8 mask
0/50/100/150/255, the uint16 date file in days since 2014-05-24, JAXA's file names)
go through ``alosmap predict`` / ``alosmap water``; the real tile in
``../shared/data`` checks sibling discovery, no data and the date range.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from datetime import date, timedelta

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import SHARED_DATA, write_raster
from rasterio.crs import CRS

from alosmap.errors import SpecError
from alosmap.io import alos2_mosaic as mosaic
from alosmap.io.raster import acquisition_date
from alosmap.io.scene import Scene, scene_date
from alosmap.radiometry import Radiometry, parse_backscatter
from alosmap.spec import ModelSpec, load_spec

WGS84 = CRS.from_epsg(4326)
#: 0.8″ pixels from the tile's north-west corner, like JAXA's N23W161 tile
TILE_TRANSFORM = Affine(0.8 / 3600, 0.0, -161.0, 0.0, -0.8 / 3600, 23.0)
SIZE = 300
LAUNCH = date(2014, 5, 24)
DAY_MOST, DAY_LATE = 2300, 2312  # 2020-09-09 and 2020-09-21
REAL_DIR = SHARED_DATA / "alos2_mosaic_N23W161_2020"
REAL_HH = REAL_DIR / "N23W161_20_sl_HH_F02DAR.tif"
needs_real_tile = pytest.mark.skipif(
    not REAL_HH.exists(), reason=f"real ALOS-2 mosaic tile absent: {REAL_HH}"
)


def _dn(db: np.ndarray) -> np.ndarray:
    """γ0 dB → amplitude DN (γ0 = 20·log10(DN) − 83), at least 2 (1 is no data)."""
    return np.clip(np.rint(10 ** ((db + 83.0) / 20.0)), 2, 65535).astype(np.uint16)


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """HH DN, mask and date arrays of a 300 × 300 tile.

    Rows 0-19 are no data (DN 1, mask 0, date 1); rows 10-19 of columns 0-9 are
    layover in the mask where HH has no data (not counted). Layover: rows 100-119,
    columns 0-49 (1000 px); shadow: rows 200-209, columns 250-299 (500 px); ocean
    (kept): rows 250-299, columns 0-99. Columns 150+ were acquired 12 days later.
    """
    rng = np.random.default_rng(seed)
    db = rng.normal(-9.0, 3.0, (SIZE, SIZE))
    db[250:, :100] = rng.normal(-22.0, 2.0, (50, 100))  # ocean: dark
    hh = _dn(db)
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[250:, :100] = 50
    mask[100:120, :50] = 100
    mask[200:210, 250:] = 150
    days = np.full((SIZE, SIZE), DAY_MOST, np.uint16)
    days[:, 150:] = DAY_LATE
    hh[:20] = 1
    mask[:20] = 0
    mask[10:20, :10] = 100
    days[:20] = 1
    return {"hh": hh, "mask": mask, "date": days}


def make_tile(
    folder,
    *,
    parts=("hh", "mask", "date"),
    hh_nodata=1,
    version="F02DAR",
    xml: str | None = None,
):
    """Write a synthetic tile ``N23W161_20_*`` (the parts asked) into ``folder``."""
    a = _arrays()
    ver = f"_{version}" if version else ""
    names = {
        "hh": f"N23W161_20_sl_HH{ver}.tif",
        "mask": f"N23W161_20_mask{ver}.tif",
        "date": f"N23W161_20_date{ver}.tif",
    }
    nodata = {"hh": hh_nodata, "mask": 0, "date": 1}
    folder.mkdir(parents=True, exist_ok=True)
    for part in parts:
        write_raster(
            folder / names[part],
            a[part],
            crs=WGS84,
            transform=TILE_TRANSFORM,
            nodata=nodata[part],
        )
    if xml is not None:
        (folder / f"N23W161_20{ver}.xml").write_text(xml, encoding="utf-8")
    return folder / names["hh"], a


def _expected_counts(a):
    data = a["hh"] != 1
    return (
        int(np.count_nonzero(data & (a["mask"] == 100))),
        int(np.count_nonzero(data & (a["mask"] == 150))),
    )


def _tags(path):
    with rasterio.open(path) as ds:
        return ds.tags(), ds.read(1), ds.nodata


def _model_with(tmp_path, model, **radiometry):
    """A copy of ``model`` whose spec's radiometry has ``radiometry`` changed."""
    import torch

    from alosmap.models import build_model
    from alosmap.spec import save_model

    spec = load_spec(model)
    spec = spec.replace(radiometry=dataclasses.replace(spec.radiometry, **radiometry))
    torch.manual_seed(1)
    return save_model(build_model(spec.arch).eval(), spec, tmp_path / "m.safetensors")


# ------------------------------------------------------------------ names, files
def test_mosaic_names_and_siblings(tmp_path):
    hh, _ = make_tile(tmp_path / "t", parts=("hh", "mask"))
    name = mosaic.parse_mosaic_name(hh)
    assert (name.tile, name.yy, name.pol, name.version) == (
        "N23W161",
        "20",
        "HH",
        "F02DAR",
    )
    assert name.year == 2020 and name.launch == LAUNCH
    assert name.sibling("mask") == "N23W161_20_mask_F02DAR.tif"
    assert name.sibling("date") == "N23W161_20_date_F02DAR.tif"
    assert name.sibling("xml") == "N23W161_20_F02DAR.xml"
    assert mosaic.parse_mosaic_name("S05E120_17_sl_HV.tif").version == ""
    assert mosaic.parse_mosaic_name("N35E139_09_sl_HH.tif").launch == date(2006, 1, 24)
    for other in (
        "IMG-HH-ALOS2448452890-220912-UBSR2.1GUD.tif",
        "N23W161_20_mask_F02DAR.tif",
        "N23W161_2020_sl_HH_F02DAR.tif",
        "scene.tif",
    ):
        assert mosaic.parse_mosaic_name(other) is None, other
        assert mosaic.find_mosaic_files(other) is None
    files = mosaic.find_mosaic_files(hh)
    assert files.mask == tmp_path / "t" / "N23W161_20_mask_F02DAR.tif"
    assert files.hh == hh
    assert files.date is files.xml is files.linci is files.hv is None


def test_date_range_is_read_block_by_block(tmp_path, monkeypatch):
    hh, a = make_tile(tmp_path, parts=("hh", "date"))
    days = a["date"].copy()
    days[-1, -1] = 2400  # the last row only: a read that stops early misses it
    path = tmp_path / "N23W161_20_date_F02DAR.tif"
    write_raster(path, days, crs=WGS84, transform=TILE_TRANSFORM, nodata=1)
    monkeypatch.setattr(mosaic, "DATE_ROWS", 64)
    reads = []
    real_read = rasterio.io.DatasetReader.read

    def read(self, *args, **kw):
        reads.append(kw["window"].height)
        return real_read(self, *args, **kw)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
    found = mosaic.read_date_range(path, LAUNCH)
    assert max(reads) <= 64 and sum(reads) == SIZE
    assert found.first == LAUNCH + timedelta(DAY_MOST) == date(2020, 9, 9)
    assert found.last == LAUNCH + timedelta(2400)
    assert found.typical == date(2020, 9, 9)  # columns 0-149: most pixels
    assert found.source == "date file N23W161_20_date_F02DAR.tif"
    # the scene's date for build-dataset, batch records: the typical day; the
    # scene supplies it (io.raster reads only tags and L2.1 names)
    assert scene_date(hh, {}) == date(2020, 9, 9)
    assert scene_date(hh, {"ACQUISITION_DATE": "2020-10-01"}) == date(2020, 10, 1)
    assert acquisition_date(hh, {}) is None


def test_info_names_a_mosaic_tiles_date(cli, tmp_path):
    """`alosmap info` on a tile gives its typical day from the date file beside it."""
    hh, _ = make_tile(tmp_path, parts=("hh", "date"))
    code, out, err = cli("info", hh, "--json")
    assert code == 0, err
    assert json.loads(out)["acquisition_date"] == "2020-09-09"


def test_unreadable_date_file_is_read_and_reported_once(tmp_path, caplog, monkeypatch):
    hh, _ = make_tile(tmp_path, parts=("hh", "mask"))
    date_file = tmp_path / "N23W161_20_date_F02DAR.tif"
    date_file.write_bytes(b"II*\0 garbled, not a GeoTIFF")
    opened = []
    real_open = mosaic.open_raster

    def open_raster(path, **kw):
        opened.append(str(path))
        return real_open(path, **kw)

    monkeypatch.setattr(mosaic, "open_raster", open_raster)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Scene(hh, Radiometry()) as sc:
            info = sc.info
            assert info.date is None  # the name gives only the year
            assert info.date_range == (date(2020, 1, 1), date(2020, 12, 31))
            assert info.date_source == "file name year"
    said = [r for r in caplog.records if "ignoring the date file" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert said[0].levelname == "WARNING" and "N23W161_20_date" in said[0].getMessage()
    assert not [w for w in caught if "date" in str(w.message)]
    assert opened.count(str(date_file)) == 1


# ------------------------------------------------------------- predict / water
def test_predict_masks_layover_and_shadow_and_records_gamma0(
    cli, tiny_lulc_model, tmp_path
):
    hh, a = make_tile(tmp_path / "tile")
    out = tmp_path / "map.tif"
    code, stdout, err = cli(
        "predict", hh, "-m", tiny_lulc_model, "-o", out, "--threads", "1"
    )
    assert code == 0, err
    assert stdout.splitlines() == [str(out)]
    layover, shadow = _expected_counts(a)
    assert (layover, shadow) == (1000, 500)
    assert f"masked as no data: {layover} layover px, {shadow} shadow px" in err
    # a σ0 model on a γ0 tile: one warning line naming both
    warn = [line for line in err.splitlines() if "trained on sigma0" in line]
    assert len(warn) == 1, err
    assert "N23W161_20_sl_HH_F02DAR.tif is gamma0 (mosaic file name)" in warn[0]
    tags, classes, nodata = _tags(out)
    invalid = (a["hh"] == 1) | np.isin(a["mask"], (0, 100, 150))
    np.testing.assert_array_equal(classes == nodata, invalid)
    assert (classes[a["mask"] == 50] != nodata).all()  # ocean is mapped
    assert tags["ACQUISITION_START_DATE"] == "2020-09-09"
    assert tags["ACQUISITION_END_DATE"] == "2020-09-21"
    assert tags["ACQUISITION_DATE"] == "2020-09-09"
    assert tags["ACQUISITION_DATES_SOURCE"] == "date file N23W161_20_date_F02DAR.tif"
    assert tags["SOURCE_BACKSCATTER"] == "gamma0"
    assert tags["SOURCE_MASK"] == "N23W161_20_mask_F02DAR.tif"


def test_water_without_nodata_tag_mask_or_date_file(cli, tiny_water_model, tmp_path):
    # no no-data tag: DN 1 is still no data; only the year is known; no mask
    hh, a = make_tile(tmp_path / "tile", parts=("hh",), hh_nodata=None)
    with rasterio.open(hh) as ds:
        assert ds.nodata is None
    out = tmp_path / "water.tif"
    code, _, err = cli("water", hh, "-m", tiny_water_model, "-o", out)
    assert code == 0, err
    assert "masked as no data" not in err
    assert "no mask file N23W161_20_mask_F02DAR.tif beside" in err
    tags, classes, nodata = _tags(out)
    np.testing.assert_array_equal(classes == nodata, a["hh"] == 1)
    assert tags["ACQUISITION_START_DATE"] == "2020-01-01"
    assert tags["ACQUISITION_END_DATE"] == "2020-12-31"
    assert tags["ACQUISITION_DATES_SOURCE"] == "file name year"
    assert "ACQUISITION_DATE" not in tags  # a year is not a date
    assert tags["SOURCE_BACKSCATTER"] == "gamma0"


def test_gamma0_model_fits_mosaics_and_warns_on_l21_scenes(
    cli, tiny_lulc_model, small_scene, tmp_path
):
    model = _model_with(tmp_path, tiny_lulc_model, backscatter="gamma0")
    assert load_spec(model).radiometry.backscatter == "gamma0"
    hh, _ = make_tile(tmp_path / "tile")
    code, _, err = cli("predict", hh, "-m", model, "-o", tmp_path / "a.tif")
    assert code == 0, err
    assert "backscatter but" not in err
    code, _, err = cli("predict", small_scene, "-m", model, "-o", tmp_path / "b.tif")
    assert code == 0, err
    warn = [line for line in err.splitlines() if "trained on gamma0" in line]
    assert len(warn) == 1 and "is sigma0 (ALOS-2 L2.1 file name)" in warn[0], err
    tags, _, _ = _tags(tmp_path / "b.tif")
    assert tags["SOURCE_BACKSCATTER"] == "sigma0"
    assert "ACQUISITION_START_DATE" not in tags  # an L2.1 scene has one date
    # a BACKSCATTER tag wins over the name
    plain = write_raster(
        tmp_path / "N23W161_20_sl_HH_X.tif",
        _arrays()["hh"],
        crs=WGS84,
        transform=TILE_TRANSFORM,
        nodata=1,
        tags={"BACKSCATTER": "Sigma-0"},
    )
    with Scene(plain, Radiometry()) as sc:
        assert (sc.info.backscatter, sc.info.backscatter_source) == (
            "sigma0",
            "BACKSCATTER tag",
        )


def test_mask_of_another_size_is_one_error_line(cli, tiny_lulc_model, tmp_path):
    hh, _ = make_tile(tmp_path / "tile", parts=("hh",))
    write_raster(
        tmp_path / "tile" / "N23W161_20_mask_F02DAR.tif",
        np.full((100, 120), 255, np.uint8),
        crs=WGS84,
        transform=TILE_TRANSFORM,
        nodata=0,
    )
    out = tmp_path / "m.tif"
    code, stdout, err = cli("predict", hh, "-m", tiny_lulc_model, "-o", out)
    lines = err.strip().splitlines()
    assert code == 1 and stdout == "" and not out.exists()
    assert len(lines) == 1 and lines[0].startswith("alosmap: error:"), err
    assert "is 120 x 100 px, the scene 300 x 300 px: not the same tile" in lines[0]


def test_layover_and_shadow_are_counted_once_per_row(tmp_path):
    hh, a = make_tile(tmp_path)
    layover, shadow = _expected_counts(a)
    with Scene(hh, Radiometry()) as sc:
        assert sc.nodata == 1 and sc.info.mask is not None
        _, v1 = sc.read_raw(0, 150)
        _, v2 = sc.read_raw(90, 210)  # overlaps rows 90-149
        assert (sc.layover_pixels, sc.shadow_pixels) == (layover, shadow)
        np.testing.assert_array_equal(v1[90:], v2[:60])
        assert not v2[10:30, :50].any()  # layover rows 100-119
        # an area of interest counts its own pixels
        from rasterio.windows import Window

        view = sc.crop(Window(0, 100, 25, 200))
        view.read_raw(0, 200)
        assert (view.layover_pixels, view.shadow_pixels) == (20 * 25, 0)


# ---------------------------------------------------------- radiometry, xml
def test_radiometry_records_backscatter_and_loads_old_specs(tiny_lulc_model):
    spec = load_spec(tiny_lulc_model)
    assert spec.radiometry.backscatter == "sigma0"
    data = json.loads(spec.to_json())
    assert data["radiometry"]["backscatter"] == "sigma0"
    del data["radiometry"]["backscatter"]  # a spec written before the field
    assert ModelSpec.from_dict(data).radiometry.backscatter == "sigma0"
    data["radiometry"]["backscatter"] = "gamma0"
    assert ModelSpec.from_dict(data).radiometry.backscatter == "gamma0"
    with pytest.raises(SpecError, match=r"radiometry\.backscatter: expected one of"):
        Radiometry(backscatter="beta0")
    assert parse_backscatter("Gamma-0") == "gamma0"
    assert parse_backscatter("sigma nought") == "sigma0"
    assert parse_backscatter("γ0") == "gamma0"
    assert parse_backscatter("beta0") is None
    assert parse_backscatter(None) is None


XML = """<?xml version="1.0" encoding="utf-8"?>
<Metadata>
  <GeneralMetadata>
    <Product Copyright="JAXA/EORC">Normalised Radar Backscatter</Product>
    <DocumentIdentifier>CARD4L-NRB v5.0</DocumentIdentifier>
    <DataCollectionTime TimeZone="UTC">
      <FirstAcquistionDate>2020-09-09</FirstAcquistionDate>
      <LastAcquistitionDate>2020-09-21</LastAcquistitionDate>
    </DataCollectionTime>
    <SourceAttributes><Satellite>ALOS-2</Satellite></SourceAttributes>
  </GeneralMetadata>
  <PerPixelMetadata>
    <DataMask><BitValues>
      <ValidData>255</ValidData><NoData>0</NoData><Layover>{layover}</Layover>
      <Shadow>150</Shadow><OceanWater>50</OceanWater>
    </BitValues></DataMask>
    <AcquisitionDate><ZeroReferenceDate>2014-05-24</ZeroReferenceDate>
    </AcquisitionDate>
  </PerPixelMetadata>
  <RadiometricTerrainCorrectedMeasurements><BackscatterMeasurementData>
    <BackscatterMeasurement>Gamma-0</BackscatterMeasurement>
  </BackscatterMeasurementData></RadiometricTerrainCorrectedMeasurements>
</Metadata>
"""


def test_xml_metadata_is_read_defensively(tmp_path, caplog):
    xml = XML.format(layover=77)
    hh, _ = make_tile(tmp_path / "t", parts=("hh", "mask"), xml=xml)
    meta = mosaic.read_metadata(tmp_path / "t" / "N23W161_20_F02DAR.xml")
    assert meta.first_date == date(2020, 9, 9) and meta.last_date == date(2020, 9, 21)
    assert meta.zero_date == LAUNCH and meta.backscatter == "gamma0"
    assert meta.product == "Normalised Radar Backscatter"
    assert meta.mask_codes.layover == 77 and meta.mask_codes.shadow == 150
    with Scene(hh, Radiometry()) as sc:  # no date file: the xml's range
        assert sc.info.date_range == (date(2020, 9, 9), date(2020, 9, 21))
        assert sc.info.date_source == "xml metadata" and sc.info.date is None
        assert sc.info.backscatter_source == "mosaic xml metadata"
        sc.read_raw(0, SIZE)
        # the xml says layover is 77: JAXA's 100 is not masked then
        assert sc.layover_pixels == 0
    # entities are never expanded: a DOCTYPE makes the file ignored
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaa">]>'
        "<Metadata><FirstAcquistionDate>&a;</FirstAcquistionDate></Metadata>",
        encoding="utf-8",
    )
    assert mosaic.read_metadata(bomb) is None
    assert "declares a DOCTYPE or entities" in caplog.text
    broken = tmp_path / "broken.xml"
    broken.write_text("<Metadata><Product>", encoding="utf-8")
    assert mosaic.read_metadata(broken) is None
    assert "malformed metadata broken.xml" in caplog.text


# ------------------------------------------------------------------ real tile
@pytest.mark.realdata
@needs_real_tile
def test_real_tile_siblings_nodata_and_dates():
    files = mosaic.find_mosaic_files(REAL_HH)
    assert files.date == REAL_DIR / "N23W161_20_date_F02DAR.tif"
    assert files.linci == REAL_DIR / "N23W161_20_linci_F02DAR.tif"
    assert files.xml == REAL_DIR / "N23W161_20_F02DAR.xml"
    assert files.hv == REAL_DIR / "N23W161_20_sl_HV_F02DAR.tif"
    assert files.mask is None  # not provided with this copy of the tile
    meta = mosaic.read_metadata(files.xml)
    assert meta.backscatter == "gamma0" and meta.zero_date == LAUNCH
    assert meta.first_date == meta.last_date == date(2020, 9, 9)
    assert meta.mask_codes == mosaic.MaskCodes()  # JAXA's 0/50/100/150/255
    found = mosaic.read_date_range(files.date, LAUNCH)
    assert found.first == found.last == found.typical == date(2020, 9, 9)
    with Scene(REAL_HH, Radiometry()) as sc:
        info = sc.info
        assert sc.nodata == 1 and info.nodata == 1
        assert info.date == date(2020, 9, 9)
        assert info.date_range == (date(2020, 9, 9), date(2020, 9, 9))
        assert info.date_source == "date file N23W161_20_date_F02DAR.tif"
        assert (info.backscatter, info.mask) == ("gamma0", None)
        raw, valid = sc.read_raw(3900, 100)
        np.testing.assert_array_equal(valid, raw > 1)


@pytest.mark.realdata
@needs_real_tile
def test_real_tile_with_a_synthetic_mask(tmp_path):
    """The real HH and date files beside a synthetic mask (links, not copies)."""
    for f in REAL_DIR.iterdir():
        (tmp_path / f.name).symlink_to(f)
    with rasterio.open(REAL_HH) as ds:
        profile = ds.profile
        dn = ds.read(1, window=((3950, 4500), (0, ds.width)))
    mask = np.full((profile["height"], profile["width"]), 255, np.uint8)
    mask[4300:4400, 2500:3000] = 100  # the data is a triangle: rows 3950+,
    mask[4420:4470, 3500:3900] = 150  # from the right, wider downwards
    profile.update(dtype="uint8", nodata=0, compress="lzw")
    with rasterio.open(tmp_path / "N23W161_20_mask_F02DAR.tif", "w", **profile) as ds:
        ds.write(mask, 1)
    data = dn > 1
    layover = int(np.count_nonzero(data & (mask[3950:] == 100)))
    shadow = int(np.count_nonzero(data & (mask[3950:] == 150)))
    assert layover > 0 and shadow > 0
    with Scene(tmp_path / REAL_HH.name, Radiometry()) as sc:
        _, valid = sc.read_raw(3950, 550)
    assert (sc.layover_pixels, sc.shadow_pixels) == (layover, shadow)
    np.testing.assert_array_equal(valid, data & (mask[3950:] == 255))
