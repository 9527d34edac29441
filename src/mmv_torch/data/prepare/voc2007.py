"""PASCAL VOC 2007 classification: ``VOC2007/Annotations/<id>.xml`` and ``ImageSets/Main/<set>.txt`` ->
one manifest line per image with ``image``, ``split``, ``labels`` (the classes with at least one object
not marked difficult) and ``difficult`` (the classes present only as difficult objects), for the
``voc2007`` protocol of ``eval image`` (a difficult image is left out of that class's AP).

``--annotations``: the ``VOC2007`` folder (holding ``Annotations/`` and ``ImageSets/``) or the
``VOCdevkit`` folder above it. Default: ``trainval`` -> ``split: "train"`` and ``test`` -> ``split:
"test"`` (the test tar unpacks into the same folder; a set whose list is absent is skipped, both absent
is an error). ``--split trainval|train|val|test`` keeps one list: ``trainval``/``train`` -> train,
``val``/``test`` -> test (``train`` and ``val`` manifests concatenated give the validation protocol).
Every line also keeps ``voc_split``, the list it came from.

Quirks handled: an id listed twice, an id without its XML file, a truncated or malformed XML file,
an object without a name or with an unknown class name, a ``difficult`` flag that is not 0/1 (each: the
image goes to the report's ``malformed``, never the manifest); a missing ``<difficult>`` tag means 0.
Media: ``JPEGImages/<id>.jpg`` below the media root (``VOC2007`` or ``VOCdevkit``), else
``<id>.<any image extension>`` in any folder.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from mmv_torch.data.prepare.core import DatasetSpec, Options, PrepareReport, Row

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
"""The 20 classes, in the devkit's order (alphabetical)."""

IMAGE_SETS = {"trainval": "train", "train": "train", "val": "test", "test": "test"}
"""ImageSets/Main list -> manifest split."""


def voc_folder(annotations: Path) -> Path:
    """The folder holding ``Annotations/`` and ``ImageSets/``: ``annotations`` or its ``VOC2007`` child."""
    for d in (annotations, annotations / "VOC2007"):
        if (d / "Annotations").is_dir() and (d / "ImageSets" / "Main").is_dir():
            return d
    raise ValueError(f"--annotations {annotations}: expected the VOC2007 folder (with Annotations/ and "
                     "ImageSets/Main/) or the VOCdevkit folder above it")


def read_objects(path: Path) -> list[tuple[str, bool]]:
    """``(class name, difficult)`` of every ``<object>`` of one annotation file; ``ValueError`` with the
    reason when the file cannot be used."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"malformed XML ({e})") from None
    except OSError as e:
        raise ValueError(f"cannot read ({e})") from None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if not name:
            raise ValueError("an <object> without a <name>")
        if name not in VOC_CLASSES:
            raise ValueError(f"unknown class name {name!r} (not one of the 20 VOC classes)")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise ValueError(f"<difficult> of a {name!r} object is {flag!r}, not 0 or 1")
        objects.append((name, flag == "1"))
    if not objects:
        raise ValueError("no <object>")
    return objects


def _image_sets(folder: Path, options: Options) -> list[str]:
    if options.split is not None:
        if options.split not in IMAGE_SETS:
            raise ValueError(f"--split for voc2007 is one of {list(IMAGE_SETS)} (default: trainval and test), got "
                             f"{options.split!r}")
        return [options.split]
    found = [s for s in ("trainval", "test") if (folder / "ImageSets" / "Main" / f"{s}.txt").is_file()]
    if not found:
        raise ValueError(f"{folder / 'ImageSets' / 'Main'} has neither trainval.txt nor test.txt")
    return found


def read(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """One row per listed image whose annotation file can be read."""
    folder = voc_folder(annotations)
    seen: dict[str, str] = {}
    for image_set in _image_sets(folder, options):
        list_file = folder / "ImageSets" / "Main" / f"{image_set}.txt"
        try:
            lines = list_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read {list_file}: {e}") from e
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            image_id, where = line.split()[0], f"{list_file}:{n}"
            if image_id in seen:
                report.bad(where, f"image {image_id} listed again (first in {seen[image_id]})")
                continue
            seen[image_id] = where
            xml = folder / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                report.bad(where, f"no annotation file {xml}")
                continue
            try:
                objects = read_objects(xml)
            except ValueError as e:
                report.bad(f"{xml}", str(e))
                continue
            labels = sorted({name for name, difficult in objects if not difficult})
            difficult = sorted({name for name, _ in objects} - set(labels))
            yield Row(image_id, where, fields={"labels": labels, "difficult": difficult,
                                               "split": IMAGE_SETS[image_set], "voc_split": image_set})


def names(row: Row) -> list[tuple[str, bool]]:
    """``JPEGImages/<id>`` below the media root (the VOC2007 or the VOCdevkit folder), then ``<id>`` in any
    folder (segmentation masks share the ids: name JPEGImages or its parent as the media root)."""
    return [(f"JPEGImages/{row.id}", False), (f"VOC2007/JPEGImages/{row.id}", False), (row.id, False)]


SPEC = DatasetSpec("voc2007", read, names, ("image",),
                   "VOC2007 Annotations/*.xml + ImageSets/Main -> images with labels and difficult classes")
