"""Lazily listed image inputs for batch inference on many processes: a folder tree, a text file of paths, or a glob.

:func:`list_inputs` walks the input one folder at a time (folders in sorted order, each folder's images sorted and
named together), so a tree of a million files never sits in memory: only the entries of the folder being read do.
:func:`write_listing` streams that walk into a tab-separated file (``name<TAB>path`` per line) written once, by one
process; :class:`ImageShards` reads the file back in every process and DataLoader worker, each taking every k-th
batch of lines, so every image belongs to exactly one (process, worker) and no shard is padded with repeats.
Workers decode the images (PIL, EXIF applied) and skip the ones whose outputs already exist before decoding them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from zoo.data.io import IMAGE_SUFFIXES, read_image
from zoo.fileio import atomic_write

LIST_SUFFIXES = (".txt", ".lst")

Naming = Callable[[Sequence[Path]], list[str]]


def stem_names(paths: Sequence[Path]) -> list[str]:
    """The default naming of one folder's images: the file stem (the command line hands in its own rule)."""
    return [p.stem for p in paths]


def _folder_tree(root: Path) -> Iterator[tuple[Path, list[Path]]]:
    """(folder, its image files sorted) for every folder under ``root``, folders in sorted order, one at a time."""
    pending = [root]
    while pending:
        folder = pending.pop()
        files, folders = [], []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir():
                    folders.append(entry.name)
                elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    files.append(entry.name)
        pending.extend(folder / name for name in sorted(folders, reverse=True))
        if files:
            yield folder, [folder / name for name in sorted(files)]


def _grouped(paths: Iterator[Path]) -> Iterator[tuple[Path, list[Path]]]:
    """Consecutive paths grouped by their folder (a text file's lines, a glob's matches)."""
    folder, group = None, []
    for path in paths:
        if path.parent != folder and group:
            yield folder, group
            group = []
        folder = path.parent
        group.append(path)
    if group:
        yield folder, group


def _text_lines(listing: Path) -> Iterator[Path]:
    with listing.open(encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line)
                yield path if path.is_absolute() else listing.parent / path


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern's literal part names (the outputs mirror the matches below it)."""
    parts = Path(pattern).parts
    magic = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:magic]) if magic else Path(".")


def _relative_folder(folder: Path, root: Path) -> Path:
    try:
        return folder.relative_to(root)
    except ValueError:
        return Path(*folder.resolve().parts[1:])


def list_inputs(source: str | Path, naming: Naming = stem_names) -> Iterator[tuple[str, Path]]:
    """(output name, path) of every image ``source`` names, lazily, in a fixed order.

    A name is the image's folder relative to the input's root followed by ``naming`` applied to that folder's
    images (so the outputs mirror the input tree; images directly in a folder input are named by ``naming`` alone).

    Args:
        source: a folder (walked recursively, files with an image suffix), a ``.txt``/``.lst`` file of image paths
            (one a line, relative to the file's folder, ``#`` comments), an image file, or a glob (``**`` recurses).
        naming: one name per image of one folder, unique within that folder (e.g. the stem, made unique).

    Raises:
        FileNotFoundError: ``source`` is neither a file, a folder nor a glob that matches a file.
    """
    path = Path(source)
    if path.is_dir():
        root, groups = path, _folder_tree(path)
    elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        root, groups = path.parent, _grouped(_text_lines(path))
    elif path.is_file():
        root, groups = path.parent, iter([(path.parent, [path])])
    else:
        matches = (Path(p) for p in glob.iglob(str(source), recursive=True))
        root, groups = _glob_root(str(source)), _grouped(p for p in matches if p.is_file())
    found = False
    for folder, files in groups:
        prefix = _relative_folder(folder, root)
        for name, file in zip(naming(files), files, strict=True):
            found = True
            yield (prefix / name).as_posix(), file
    if not found:
        raise FileNotFoundError(f"{source}: no images there (a folder, a .txt/.lst file of paths, or a glob)")


def write_listing(source: str | Path, listing: str | Path, naming: Naming = stem_names) -> int:
    """Stream :func:`list_inputs` into ``listing`` (``name<TAB>path`` per line, written atomically); the count.

    Raises:
        FileNotFoundError: see :func:`list_inputs`.
        ValueError: a path holds a tab or a newline (the listing could not be read back).
    """
    count = 0

    def write(file: Any) -> None:
        nonlocal count
        for name, path in list_inputs(source, naming):
            text = f"{name}\t{path}\n"
            if text.count("\t") != 1 or text.count("\n") != 1:
                raise ValueError(f"{path}: a path with a tab or a newline cannot be listed; rename the file")
            file.write(text.encode("utf-8"))
            count += 1

    atomic_write(listing, write)
    return count


@dataclass(frozen=True)
class Item:
    """One listed image as a DataLoader worker hands it on.

    Attributes:
        name: the output name.
        path: the input file.
        image: the decoded ``H×W×3`` uint8 RGB image, or None when skipped or unreadable.
        error: why the image could not be read ("" when it was).
        skipped: its outputs already exist.
    """

    name: str
    path: str
    image: np.ndarray | None = None
    error: str = ""
    skipped: bool = False


class ImageShards(IterableDataset):
    """The batches of a listing file that belong to one process, split again among its DataLoader workers.

    Batch ``j`` (lines ``j*batch_size`` to ``(j+1)*batch_size - 1``) goes to process ``j % world_size`` and, within
    it, to worker ``(j // world_size) % num_workers``. Use with ``DataLoader(shards, batch_size=None)``.

    Args:
        listing: a file from :func:`write_listing`.
        count: its number of lines.
        batch_size: images per batch.
        rank: this process's index among ``world_size``.
        world_size: number of processes.
        done: called with an output name: True when its outputs exist (the image is then not decoded).
    """

    def __init__(
        self,
        listing: str | Path,
        count: int,
        *,
        batch_size: int = 1,
        rank: int = 0,
        world_size: int = 1,
        done: Callable[[str], bool] | None = None,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        self.listing, self.count, self.batch_size = Path(listing), int(count), int(batch_size)
        self.rank, self.world_size, self.done = rank, world_size, done

    def __len__(self) -> int:
        """The number of batches of this process (Lightning's progress bar takes it as the total)."""
        batches = -(-self.count // self.batch_size)
        return len(range(self.rank, batches, self.world_size))

    def __iter__(self) -> Iterator[list[Item]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard, shards = self.rank + self.world_size * worker, self.world_size * workers
        with self.listing.open(encoding="utf-8") as lines:
            batches = iter(lambda: list(islice(lines, self.batch_size)), [])
            for index, batch in enumerate(batches):
                if index % shards == shard:
                    yield [self._item(line) for line in batch]

    def _item(self, line: str) -> Item:
        name, path = line.rstrip("\n").split("\t")
        if self.done is not None and self.done(name):
            return Item(name, path, skipped=True)
        try:
            return Item(name, path, image=read_image(path))
        except Exception as error:  # any unreadable file is reported by the writer and the run goes on
            return Item(name, path, error=str(error) or type(error).__name__)


__all__ = ["ImageShards", "Item", "list_inputs", "stem_names", "write_listing"]
