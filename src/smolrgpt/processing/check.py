"""`smolrgpt data check`: validate a data file record by record and report every problem.

Each problem names the file, the record index, the record id and what is wrong. The file is streamed
(the same readers as training, with their own tag/mask check turned off so that this module can report
it per record), masks are decoded by the one mask pipeline (`processing.regions`), and every image and
depth map is decoded in full, so a truncated or corrupt file fails here rather than in `predict` or
training (results are cached per file because many questions share one frame).

Image and depth checks run when the folders are given (`images_root`, `depths_root`) or when the
format's own layout points at folders that exist; otherwise they are skipped and the report says so.
Without an image, masks are decoded at their own RLE size.

Depth mode policy: the Track 3 depth PNGs are 8-bit ("L"). A 16-bit or float depth map is accepted
(the depth transform reads it) but reported as a WARNING (`depth_mode`): it is min-max scaled per
image instead of divided by 255, so its relative depths are not on the scale of the rest of the split.
Warnings do not fail the check unless `strict`.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from smolrgpt.data.sample import CATEGORIES, MASK_TAG, Sample
from smolrgpt.data.track3 import answer_problem
from smolrgpt.errors import SampleError

# kind -> (level, what it means); the order is the order of the summary table.
PROBLEM_KINDS: dict[str, tuple[str, str]] = {
    "malformed_json": ("error", "the file is not a well-formed JSON array (syntax error or truncation)"),
    "bad_record": ("error", "a field is missing or has the wrong type"),
    "duplicate_id": ("error", "the id was already used by an earlier record"),
    "missing_image": ("error", "the RGB image file does not exist"),
    "unreadable_image": ("error", "the RGB image exists but cannot be decoded (corrupt header or truncated)"),
    "missing_depth": ("error", "the depth map file does not exist"),
    "unreadable_depth": ("error", "the depth map exists but cannot be decoded (corrupt header or truncated)"),
    "depth_size": ("error", "the depth map size differs from the image size"),
    "depth_mode": ("warning", "the depth map is not 8-bit single channel like the rest of Track 3"),
    "tag_mask_mismatch": ("error", "the number of <mask> tags differs from the number of masks"),
    "undecodable_region": ("error", "a mask cannot be decoded (corrupt RLE, bad box or polygon)"),
    "mask_size": ("error", "a mask's size differs from the image size"),
    "empty_mask": ("error", "a mask has no pixel inside"),
    "unknown_category": ("error", "the category is not one of left_right, count, distance, mcq"),
    "bad_answer": ("error", "the normalized answer has the wrong type or is out of range for its category"),
}


@dataclass
class Problem:
    file: str
    index: int | None
    id: str | None
    kind: str
    message: str

    @property
    def level(self) -> str:
        return PROBLEM_KINDS[self.kind][0]

    def line(self) -> str:
        where = f"record {self.index}" if self.index is not None else "file"
        if self.id is not None:
            where += f" (id {self.id})"
        return f"{self.file}: {where}: {self.level} {self.kind}: {self.message}"


@dataclass
class CheckReport:
    file: str
    format: str
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    @property
    def errors(self) -> int:
        return sum(p.level == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.level == "warning" for p in self.problems)

    def ok(self, strict: bool = False) -> bool:
        return self.errors == 0 and (not strict or self.warnings == 0)

    def to_json(self, strict: bool = False) -> dict:
        return {"file": self.file, "format": self.format, "records": self.records, "ok": self.ok(strict),
                "errors": self.errors, "warnings": self.warnings, "counts": dict(self.counts()),
                "problems": [dict(asdict(p), level=p.level) for p in self.problems],
                "notes": self.notes, "stopped": self.stopped}

    def summary(self, strict: bool = False) -> str:
        bad_records = len({p.index for p in self.problems if p.index is not None})
        lines = [f"summary of {self.file} ({self.format})",
                 f"  {'records checked':<22}{self.records:>10}",
                 f"  {'records with problems':<22}{bad_records:>10}"]
        counts = self.counts()
        if counts:
            lines.append(f"  {'problem':<22}{'count':>10}  level")
            for kind, (level, _) in PROBLEM_KINDS.items():
                if counts[kind]:
                    lines.append(f"  {kind:<22}{counts[kind]:>10}  {level}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.stopped:
            lines.append(f"  stopped early: {self.stopped}")
        verdict = "OK" if self.ok(strict) else "FAILED"
        lines.append(f"  result: {verdict} ({self.errors} errors, {self.warnings} warnings)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ caches
class _BoundedCache(dict):
    """A dict emptied when it reaches `limit` entries, so memory stays bounded on files of any size."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def remember(self, key, value):
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


def _read_header(source, cache: _BoundedCache) -> tuple[int, int, str] | str:
    """(height, width, mode) of a fully decoded image, or why not: "missing" or the decoding error (a
    truncated file has a good header, so the pixels are decoded too). Cached per path because many
    questions share one frame."""
    from PIL import Image

    if isinstance(source, Image.Image):  # embedded bytes, opened lazily by the parquet reader
        try:
            source.load()
        except Exception as exc:  # noqa: BLE001 - PIL raises many unrelated types on corrupt data
            return f"{type(exc).__name__}: {exc}"
        return source.height, source.width, source.mode
    key = str(source)
    if key in cache:
        return cache[key]
    if not Path(source).is_file():
        return cache.remember(key, "missing")
    try:
        with Image.open(source) as img:
            img.load()
            return cache.remember(key, (img.height, img.width, img.mode))
    except Exception as exc:  # PIL raises many unrelated types on corrupt headers
        return cache.remember(key, f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------------------- masks
def _region_verdict(region, size: tuple[int, int]) -> tuple[str, str] | None:
    """(kind, message) of what is wrong with one region at `size`, None when it is fine."""
    from smolrgpt.processing.regions import RegionDecodeError, full_resolution_mask, region_to_grid

    try:
        if region.kind == "box":
            region_to_grid(region, size, 8)  # boxes are checked analytically, no raster needed
        elif not full_resolution_mask(region, size).any():
            return "empty_mask", "has no pixel inside"
    except RegionDecodeError as exc:
        return ("empty_mask" if "empty" in str(exc) else "undecodable_region"), str(exc)
    return None


def _region_problems(sample: Sample, image_size: tuple[int, int] | None, add, verdicts: _BoundedCache) -> None:
    from smolrgpt.processing.regions import RegionDecodeError

    tags = sample.num_mask_tags()
    if tags != len(sample.regions):
        add("tag_mask_mismatch", f"{tags} {MASK_TAG} tags but {len(sample.regions)} masks")
    for k, region in enumerate(sample.regions):
        size = image_size
        if region.kind == "rle":
            try:
                own = _rle_size(region.data)
            except RegionDecodeError as exc:
                add("undecodable_region", f"mask {k} (rle): {exc}")
                continue
            if image_size is not None and own != image_size:
                add("mask_size", f"mask {k} is {own[0]}x{own[1]} but the image is {image_size[0]}x{image_size[1]}")
            size = own  # decode at its own size: a size mismatch must not hide a corrupt RLE
        if size is None:  # polygons and mask images need the image size; the image check said why
            if region.kind == "box" and (verdict := _box_shape_problem(region.data)):
                add(verdict[0], f"mask {k} (box): {verdict[1]}")
            continue
        # A mask repeated across the questions about one frame is decoded once (~2-3 ms per 1080p RLE);
        # keyed by a 64-bit hash, not the string, to keep the cache small.
        counts = region.data.get("counts") if region.kind == "rle" else None
        key = (size, hash(counts)) if isinstance(counts, (str, bytes)) else None
        if key is not None and key in verdicts:
            verdict = verdicts[key]
        else:
            verdict = _region_verdict(region, size)
            if key is not None:
                verdicts.remember(key, verdict)
        if verdict is not None:
            add(verdict[0], f"mask {k} ({region.kind}): {verdict[1]}")


def _box_shape_problem(box: Any) -> tuple[str, str] | None:
    """What is wrong with a box when the image size is unknown (only its own shape can be checked)."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return "undecodable_region", f"a box must be [x1, y1, x2, y2], got {str(box)[:80]}"
    return None if x2 > x1 and y2 > y1 else ("empty_mask", f"box {list(box)} is empty (needs x2 > x1 and y2 > y1)")


def _rle_size(rle: Any) -> tuple[int, int]:
    from smolrgpt.processing.regions import RegionDecodeError

    try:
        h, w = (int(v) for v in rle["size"])
    except (TypeError, ValueError, KeyError):
        raise RegionDecodeError(f"RLE must be a dict with size [height, width], got {str(rle)[:80]}") from None
    if h <= 0 or w <= 0:
        raise RegionDecodeError(f"RLE size {h}x{w} is empty")
    return h, w


@dataclass
class _Context:
    """What a check needs besides the sample; picklable, so worker processes get their own copy."""

    file: str
    format: str
    check_images: bool
    check_depths: bool
    headers: _BoundedCache = field(default_factory=lambda: _BoundedCache(1_000_000))
    verdicts: _BoundedCache = field(default_factory=lambda: _BoundedCache(2_000_000))

    def follows_track3_answers(self, sample: Sample) -> bool:
        # Parquet repacks mix data sets; only the warehouse rows (far_bright depth) use Track 3 categories.
        return self.format == "track3" or (self.format == "parquet" and sample.depth_polarity == "far_bright")


def _duplicate_problem(sample: Sample, index: int, file: str, seen_ids: set) -> list[Problem]:
    if sample.id in seen_ids:
        return [Problem(file, index, sample.id, "duplicate_id", f"id {sample.id!r} appears more than once")]
    seen_ids.add(sample.id)
    return []


def check_sample(sample: Sample, index: int, ctx: _Context) -> list[Problem]:
    """Every problem of one sample on its own (ids are compared across records by the caller)."""
    problems: list[Problem] = []

    def add(kind: str, message: str) -> None:
        problems.append(Problem(ctx.file, index, sample.id, kind, message))

    image_size = None
    if sample.image is None:
        add("missing_image", "the record names no image")
    elif ctx.check_images or not isinstance(sample.image, (str, Path)):
        header = _read_header(sample.image, ctx.headers)
        if header == "missing":
            add("missing_image", f"{sample.image} does not exist")
        elif isinstance(header, str):
            add("unreadable_image", f"{sample.image}: {header}")
        else:
            image_size = header[:2]
    if sample.depth is not None and (ctx.check_depths or not isinstance(sample.depth, (str, Path))):
        header = _read_header(sample.depth, ctx.headers)
        if header == "missing":
            add("missing_depth", f"{sample.depth} does not exist")
        elif isinstance(header, str):
            add("unreadable_depth", f"{sample.depth}: {header}")
        else:
            if image_size is not None and header[:2] != image_size:
                add("depth_size", f"depth is {header[0]}x{header[1]} but the image is {image_size[0]}x{image_size[1]}")
            if ctx.format == "track3" and header[2] != "L":
                add("depth_mode", f"depth mode {header[2]!r} where Track 3 depths are 8-bit 'L'; accepted, but "
                    "scaled per image (min-max) instead of /255")

    _region_problems(sample, image_size, add, ctx.verdicts)

    if ctx.follows_track3_answers(sample) and sample.category is not None:
        if sample.category not in CATEGORIES:
            add("unknown_category", f"{sample.category!r} is not one of {', '.join(CATEGORIES)}")
        else:
            why = answer_problem(sample.category, sample.normalized_answer, len(sample.regions))
            if why:
                add("bad_answer", why)
    return problems


def _folder_check(name: str, given, derived: Path | None, notes: list[str]) -> bool:
    if given is not None:
        return True
    if derived is not None and derived.is_dir():
        return True
    where = f" ({derived} does not exist)" if derived is not None else ""
    notes.append(f"{name} not checked: no folder given{where}; pass --{name.split()[0]}s-root")
    return False


def _records(path: Path, fmt: str, images_root, depths_root, options: dict, ctx_notes: list[str]):
    """(index, Sample | SampleError, progress position) for each record, plus (total, unit, checks)."""
    allowed = {"parquet": {"depth_polarity"}, "osd": {"depth_name", "image_ext", "region_form"},
               "spatialbench": {"region_form"}}.get(fmt, set())
    if set(options) - allowed:
        from smolrgpt.errors import ConfigError

        raise ConfigError(f"option(s) {sorted(set(options) - allowed)} do not apply to the {fmt} format")
    if fmt == "parquet":
        from smolrgpt.data import parquet as reader

        import pyarrow.parquet as pq

        files = reader.parquet_files(path)
        total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        locators: dict = {}
        first = reader.Locator(files[0], images_root, depths_root)
        checks = (_folder_check("image files", images_root, first.images, ctx_notes),
                  _folder_check("depth files", depths_root, first.depths, ctx_notes))

        def rows() -> Iterator:
            for n, (file, index, row) in enumerate(reader.iter_parquet_rows(path)):
                locator = locators.get(file) or locators.setdefault(file, reader.Locator(file, images_root, depths_root))
                try:
                    yield index, reader.parquet_row_to_sample(row, index, path=file, locator=locator,
                                                              validate=False, **options), n + 1
                except SampleError as exc:
                    yield index, exc, n + 1
        return rows(), total, "rec", checks

    from smolrgpt.data.jsonarray import JSONArrayStream

    if fmt == "track3":
        from smolrgpt.data.track3 import default_dirs, track3_record_to_sample

        images, depths = default_dirs(path, images_root, depths_root)
        checks = (_folder_check("image files", images_root, images, ctx_notes),
                  _folder_check("depth files", depths_root, depths, ctx_notes))
        convert = lambda rec, i: track3_record_to_sample(rec, i, path=path, images_dir=images,  # noqa: E731
                                                         depths_dir=depths, validate=False)
    elif fmt == "llava":
        from smolrgpt.data.llava import default_images_dir, llava_record_to_sample

        images = Path(images_root) if images_root is not None else default_images_dir(path)
        checks = (_folder_check("image files", images_root, path.parent / "images", ctx_notes), False)
        convert = lambda rec, i: llava_record_to_sample(rec, i, path=path, images_dir=images,  # noqa: E731
                                                        validate=False)
    elif fmt == "osd":
        from smolrgpt.data.osd import osd_record_to_sample

        checks = (_folder_check("image files", images_root, None, ctx_notes),
                  _folder_check("depth files", depths_root, None, ctx_notes))
        images = Path(images_root) if images_root is not None else path.parent
        convert = lambda rec, i: osd_record_to_sample(rec, i, path=path, images_dir=images,  # noqa: E731
                                                      depths_dir=depths_root, validate=False, **options)
    elif fmt == "spatialbench":
        import importlib.util

        if importlib.util.find_spec("smolrgpt.data.spatialbench") is None:
            raise SampleError("the SpatialRGPT-Bench reader (smolrgpt.data.spatialbench) is not installed",
                              source=str(path))
        from smolrgpt.data.spatialbench import spatialbench_record_to_sample

        checks = (_folder_check("image files", images_root, None, ctx_notes),
                  _folder_check("depth files", depths_root, None, ctx_notes))
        images = Path(images_root) if images_root is not None else path.parent
        convert = lambda rec, i: spatialbench_record_to_sample(rec, i, path=path, images_root=images,  # noqa: E731
                                                               depths_root=depths_root, **options)
    else:
        raise SampleError(f"unknown format {fmt!r}", source=str(path))

    stream = JSONArrayStream(path)

    def records() -> Iterator:
        for index, record in stream:
            try:
                yield index, convert(record, index), stream.bytes_read
            except SampleError as exc:
                yield index, exc, stream.bytes_read
    return records(), stream.total_bytes, "B", checks


_WORKER_CONTEXT: _Context | None = None


def _init_worker(ctx: _Context) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = ctx


def _check_batch(entries: list[tuple[int, Sample | None]]) -> list[list[Problem] | None]:
    return [None if sample is None else check_sample(sample, index, _WORKER_CONTEXT) for index, sample in entries]


def _checked(items: Iterator, ctx: _Context, jobs: int, batch: int = 32) -> Iterator:
    """(index, Sample | SampleError, position, problems of the sample) in file order.

    With jobs > 1, samples are checked by worker processes (mask decoding dominates: ~2-3 ms per 1080p
    RLE) with a bounded number of batches in flight, so memory stays bounded on huge files.
    """
    if jobs <= 1:
        for index, item, position in items:
            yield index, item, position, None if isinstance(item, SampleError) else check_sample(item, index, ctx)
        return
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    def submit(pool, entries):
        # Reader errors stay here: only samples travel to the workers.
        work = [(index, None if isinstance(item, SampleError) else item) for index, item, _ in entries]
        return entries, pool.submit(_check_batch, work)

    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(ctx,)) as pool:
        pending: deque = deque()
        entries: list = []
        try:
            for entry in items:
                entries.append(entry)
                if len(entries) == batch:
                    pending.append(submit(pool, entries))
                    entries = []
                while len(pending) > 2 * jobs or (pending and pending[0][1].done()):
                    done, future = pending.popleft()
                    for (index, item, position), problems in zip(done, future.result()):
                        yield index, item, position, problems
            if entries:
                pending.append(submit(pool, entries))
            while pending:
                done, future = pending.popleft()
                for (index, item, position), problems in zip(done, future.result()):
                    yield index, item, position, problems
        finally:
            for _, future in pending:
                future.cancel()


def check_dataset(path: str | Path, *, format: str = "auto", images_root: str | Path | None = None,
                  depths_root: str | Path | None = None, max_errors: int | None = None, progress: bool | None = None,
                  on_problem: Callable[[Problem], None] | None = None, jobs: int = 1, **options) -> CheckReport:
    """Check every record of a data file. `on_problem` sees each problem as soon as it is found."""
    from tqdm import tqdm

    from smolrgpt.data import detect_format
    from smolrgpt.data.jsonarray import MalformedJSONError

    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    report = CheckReport(file=str(path), format=fmt)

    def record(problem: Problem) -> None:
        report.problems.append(problem)
        if on_problem is not None:
            on_problem(problem)

    items, total, unit, (check_images, check_depths) = _records(path, fmt, images_root, depths_root, options,
                                                                report.notes)
    ctx = _Context(str(path), fmt, check_images, check_depths)
    seen_ids: set = set()
    # progress None: show the bar only on a terminal (tqdm's own rule)
    bar = tqdm(total=total, unit=unit, unit_scale=unit == "B", disable={True: False, False: True, None: None}[progress],
               desc="checking", leave=False)
    position = 0
    try:
        for index, item, position_now, problems in _checked(items, ctx, jobs):
            bar.update(position_now - position)
            position = position_now
            report.records += 1
            if isinstance(item, SampleError):
                record(Problem(str(path), index, item.sample_id, "bad_record", item.reason))
            else:
                for problem in _duplicate_problem(item, index, str(path), seen_ids) + problems:
                    record(problem)
            if max_errors is not None and report.errors >= max_errors:
                report.stopped = f"--max-errors {max_errors} reached at record {index}"
                break
    except SampleError as exc:  # a malformed file, or a reader that cannot go on: nothing after it is trustworthy
        index = getattr(exc, "index", None)
        kind = "malformed_json" if isinstance(exc, MalformedJSONError) else "bad_record"
        record(Problem(str(path), index, exc.sample_id, kind, exc.reason))
        report.stopped = f"the file cannot be read past record {index if index is not None else report.records}"
    finally:
        bar.close()
    return report


def report_json(report: CheckReport, strict: bool = False) -> str:
    return json.dumps(report.to_json(strict), indent=2)
