"""A small PASCAL VOC 2007 folder written by tests (annotations, image sets, images)."""

from __future__ import annotations

from pathlib import Path


def touch(root: Path, *names: str) -> None:
    """Empty files ``root/name`` (folders made as needed)."""
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def voc_object(name: str, difficult: int | None = 0) -> str:
    flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    return (f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>{flag}"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>")


def write_voc(voc: Path, annotations: dict[str, str], image_sets: dict[str, list[str]], images: list[str]) -> None:
    """A VOC2007 folder: ``annotations`` id -> the <object> elements (or raw text for a broken file)."""
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, body in annotations.items():
        text = body if not body.startswith("<object>") and body else (
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>48</width><height>40</height><depth>3</depth></size>{body}</annotation>")
        (voc / "Annotations" / f"{image_id}.xml").write_text(text)
    for name, ids in image_sets.items():
        (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(i + "\n" for i in ids))
    touch(voc / "JPEGImages", *[f"{i}.jpg" for i in images])
