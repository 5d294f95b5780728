"""Turn SOURCE arguments (files, folders, globs, http(s) URLs, gzip) into bytes to parse."""

from __future__ import annotations

import glob
import http.client
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.config import DataConfig
from tunesmith.data.streams import is_gzip
from tunesmith.errors import DataError
from tunesmith.progress import progress_bar
from tunesmith.version import __version__

# Extensions a folder is searched for; explicit files and globs may have any extension.
DATA_EXTENSIONS = (".csv", ".tsv", ".tab", ".json", ".jsonl", ".ndjson", ".txt", ".text", ".md")
RETRY_BACKOFF_S = 1.0  # doubled after each failed try
RETRY_STATUSES = (408, 429)  # besides 5xx: worth another try; other 4xx are not
CHUNK = 64 * 1024


@dataclass(frozen=True)
class SourceFile:
    """One file to read (gzip or not), named as messages should name it."""

    name: str
    path: Path
    filename: str  # the name whose extension tells the format, without .gz
    content_type: str | None = None  # from the HTTP response, for URLs
    data_run: bool = False  # a data run's train.jsonl / val.jsonl
    kept: Path | None = None  # where a downloaded original was saved


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def read_sources(sources: list[str], config: DataConfig, download_dir: Path) -> list[SourceFile]:
    """Every file the sources name, in order; URLs are downloaded into `download_dir`."""
    if not sources:
        raise DataError("no data sources given; pass a file, folder, glob or URL")
    files: list[SourceFile] = []
    for source in sources:
        source = str(source)
        if is_url(source):
            path, content_type = download(source, download_dir, config)
            files.append(_load(path, path.name, content_type=content_type, kept=path))
            continue
        for path in expand_local(source):
            files.append(_load(path, str(path)))
    return files


def is_data_run_folder(folder: Path) -> bool:
    """Whether `folder` holds the outputs of `tunesmith data` (its train/val examples)."""
    return (folder / "train.jsonl").is_file() and (folder / "stats.json").is_file()


def expand_local(source: str) -> list[Path]:
    """The files a local SOURCE names: itself, a folder's data files, or a glob's matches."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return _folder_files(path)
    if any(c in source for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise DataError(f"no files match {source}; check the pattern (quote it for the shell)")
        return files
    if path.exists():
        raise DataError(f"{source} is not a regular file; pass a file, folder, glob or URL")
    raise DataError(f"{source} does not exist; check the path, or pass a folder, glob or URL")


def _folder_files(folder: Path) -> list[Path]:
    # A data run's folder: read back its examples rather than data.txt and both splits twice.
    if is_data_run_folder(folder):
        return [p for p in (folder / "train.jsonl", folder / "val.jsonl") if p.is_file()]
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix == ".gz":
            suffix = Path(path.stem).suffix.lower()
        if suffix in DATA_EXTENSIONS:
            files.append(path)
    if not files:
        raise DataError(
            f"no data files in folder {folder} (looked for {', '.join(DATA_EXTENSIONS)}, "
            "optionally .gz); pass the files themselves or a glob"
        )
    return files


def _load(
    path: Path, name: str, content_type: str | None = None, kept: Path | None = None
) -> SourceFile:
    try:
        gzipped = is_gzip(path)
    except OSError as e:
        raise DataError(
            f"cannot read {name}: {e.strerror or e}; check the file's permissions"
        ) from None
    filename = path.name
    is_data_run = path.name in ("train.jsonl", "val.jsonl") and is_data_run_folder(path.parent)
    if gzipped and filename.lower().endswith((".gz", ".gzip")):
        filename = filename.rsplit(".", 1)[0]
    return SourceFile(
        name=name,
        path=path,
        filename=filename,
        content_type=content_type,
        data_run=is_data_run,
        kept=kept,
    )


def url_filename(url: str) -> str:
    """A safe local file name for what `url` points to."""
    last = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("._")
    return name or "download"


def download(url: str, dest_dir: Path, config: DataConfig) -> tuple[Path, str | None]:
    """Fetch `url` into `dest_dir` with a progress bar, timeout, retries and a size limit."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    base = Path(url_filename(url))
    dest, n = dest_dir / base.name, 2
    while dest.exists():  # two URLs with the same file name
        dest, n = dest_dir / f"{base.stem}-{n}{base.suffix}", n + 1
    tries = config.retries + 1
    for attempt in range(1, tries + 1):
        try:
            return dest, _fetch(url, dest, config)
        except urllib.error.HTTPError as e:
            retryable = e.code >= 500 or e.code in RETRY_STATUSES
            if not retryable or attempt == tries:
                raise DataError(
                    f"cannot download {url}: HTTP {e.code} {e.reason}"
                    + (f" (after {tries} tries)" if retryable else "")
                    + "; check the URL"
                ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if attempt == tries:
                reason = getattr(e, "reason", None) or e
                raise DataError(
                    f"cannot download {url}: {reason} (after {tries} tries); check the URL and "
                    "the connection, or download the file yourself and pass its path"
                ) from None
        time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _fetch(url: str, dest: Path, config: DataConfig) -> str | None:
    limit = config.max_download_bytes
    too_big = (
        f"{url} is larger than the download limit of {config.max_download_mb:g} MB; "
        "raise --max-download-mb or download it yourself and pass the file"
    )
    request = urllib.request.Request(url, headers={"User-Agent": f"tunesmith/{__version__}"})
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(request, timeout=config.timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > limit:
            raise DataError(too_big)
        received = 0
        bar = progress_bar(total, dest.name, "B", unit_scale=True, unit_divisor=1024, leave=False)
        try:
            with bar, open(part, "wb") as out:
                while chunk := response.read(CHUNK):
                    received += len(chunk)
                    if received > limit:
                        raise DataError(too_big)
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and received < total:
                raise http.client.IncompleteRead(b"", total - received)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        header = response.headers.get("Content-Type")
        content_type = header.split(";")[0].strip().lower() if header else None
    part.replace(dest)
    return content_type
