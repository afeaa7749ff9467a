"""The prose benchmark corpus, offline: Jane Austen's six novels, one document per chapter.

    uv run benchmarks/prose_corpus.py [--out data/prose] [--deb PATH]

The text comes from Debian's package ``r-cran-janeaustenr`` 1.0.0-1 (public-domain texts from
Project Gutenberg, as R data), fetched from the Debian archive — a package registry this project
can reach without the Hugging Face hub — or read from ``--deb`` (e.g. ``apt-get download
r-cran-janeaustenr``). The package's SHA-256 is pinned, so every machine builds the same corpus.
No R is needed: the package's lazy-load database (``data/Rdata.rdb``/``.rdx``) is read here with a
minimal reader of R's XDR serialization (the few types these files hold).

Output: ``<out>/<novel>/<NNN>.txt`` (one chapter each; ~4.3 MB of English prose in ~360
documents; the front matter before chapter 1 is dropped) and ``<out>/manifest.json`` (source,
hashes, per-novel counts). Use it as ``--data.source '<out>/**/*.txt'``; the train/validation split
is the corpus loader's fixed one, a keyed hash of each document's path relative to ``<out>``
(5% of chapters in validation by default), so it is the same on every machine. The text is not
committed; the folder is written atomically (``tdlm_train.atomic``).
"""

import argparse
import gzip
import hashlib
import io
import json
import lzma
import re
import struct
import tarfile
import urllib.request
import zlib
from pathlib import Path

from tdlm_train.atomic import replace_dir, temp_dir_beside

DEB_URL = (
    "https://deb.debian.org/debian/pool/main/r/r-cran-janeaustenr/"
    "r-cran-janeaustenr_1.0.0-1_all.deb"
)
DEB_SHA256 = "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
DATA_DIR = "./usr/lib/R/site-library/janeaustenr/data/"
NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
          "sensesensibility")
# A chapter heading: "CHAPTER 1", "Chapter I", "CHAPTER XLIV" (Emma and Mansfield Park number
# chapters again in each volume; the running index below keeps file names unique).
CHAPTER = re.compile(r"^\s*chapter\s+([0-9]+|[ivxlc]+)\.?\s*$", re.IGNORECASE)


def _deb_members(deb: bytes) -> dict[str, bytes]:
    """Files of a .deb's data archive (an ``ar`` archive holding ``data.tar.*``)."""
    if not deb.startswith(b"!<arch>\n"):
        raise SystemExit("not a Debian package (no ar header)")
    pos, data = 8, None
    while pos < len(deb):
        name = deb[pos : pos + 16].decode().strip().rstrip("/")
        size = int(deb[pos + 48 : pos + 58].decode().strip())
        body = deb[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            data = body
        pos += 60 + size + (size % 2)
    if data is None:
        raise SystemExit("the package has no data.tar member")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile() and m.name.startswith(DATA_DIR)
        }


class _RReader:
    """R's binary (XDR) serialization, version 2 or 3: enough for character vectors, lists and
    the lazy-load index. Types follow R's serialize.c."""

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise SystemExit("expected R XDR serialization ('X\\n' header)")
        self.data, self.pos, self.refs = data, 2, []
        version = self._int()
        self._int(), self._int()  # the writer's and the minimum reader's R versions
        if version == 3:
            self._bytes(self._int())  # native encoding
        elif version != 2:
            raise SystemExit(f"unsupported R serialization version {version}")

    def _int(self) -> int:
        (value,) = struct.unpack(">i", self.data[self.pos : self.pos + 4])
        self.pos += 4
        return value

    def _bytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def read(self):
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 242):  # NILVALUE, EMPTYENV
            return None
        if kind == 255:  # REFSXP: index in the high bits, or in the next int
            index = (flags >> 8) or self._int()
            return self.refs[index - 1]
        if kind == 1:  # SYMSXP: a CHARSXP follows
            symbol = self.read()
            self.refs.append(symbol)
            return symbol
        if kind == 9:  # CHARSXP
            n = self._int()
            return None if n == -1 else self._bytes(n).decode("utf-8", errors="replace")
        if kind == 2:  # LISTSXP (pairlist): attributes, tag, car, then cdr
            if has_attr:
                self.read()  # a pairlist's own attributes: not needed here
            tag = self.read() if has_tag else None
            out = [(tag, self.read())]
            return out + (self.read() or [])
        if kind in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            value = [self.read() for _ in range(self._int())]
        elif kind in (10, 13):  # LGLSXP, INTSXP
            n = self._int()
            value = list(struct.unpack(f">{n}i", self._bytes(4 * n)))
        elif kind == 14:  # REALSXP
            n = self._int()
            value = list(struct.unpack(f">{n}d", self._bytes(8 * n)))
        else:
            raise SystemExit(f"R type {kind} is not expected in this package's data")
        if has_attr:
            attrs = dict(self.read())
            if "names" in attrs and kind == 19:
                return dict(zip(attrs["names"], value, strict=True))
        return value


def _lazyload_object(rdb: bytes, offset: int, length: int):
    """One object of a lazy-load database: 4-byte size, then zlib (or a typed) compression."""
    blob = rdb[offset : offset + length]
    body = blob[4:]
    if body[:1] in (b"Z", b"2", b"X", b"0"):  # R >= 2.10 typed compression
        kind, body = body[:1], body[1:]
        if kind == b"X":
            return _RReader(lzma.decompress(body)).read()
        if kind == b"0":
            return _RReader(body).read()
        if kind == b"2":
            import bz2

            return _RReader(bz2.decompress(body)).read()
    return _RReader(zlib.decompress(body)).read()


def novels(deb: bytes) -> dict[str, list[str]]:
    """Each novel's lines, from the package bytes."""
    files = _deb_members(deb)
    index = _RReader(gzip.decompress(files[DATA_DIR + "Rdata.rdx"])).read()
    rdb = files[DATA_DIR + "Rdata.rdb"]
    out = {}
    for name in NOVELS:
        offset, length = index["variables"][name]
        out[name] = [line or "" for line in _lazyload_object(rdb, int(offset), int(length))]
    return out


def chapters(lines: list[str]) -> list[str]:
    """The chapters of one novel, headings dropped; text before the first heading dropped."""
    out: list[list[str]] = []
    for line in lines:
        if CHAPTER.match(line):
            out.append([])
        elif out:
            out[-1].append(line)
    texts = ["\n".join(chapter).strip() + "\n" for chapter in out]
    return [t for t in texts if t.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/prose"))
    parser.add_argument("--deb", type=Path, help="a downloaded r-cran-janeaustenr .deb")
    args = parser.parse_args()
    if args.deb:
        deb = args.deb.read_bytes()
    else:
        print(f"fetching {DEB_URL}")
        with urllib.request.urlopen(DEB_URL, timeout=60) as response:
            deb = response.read()
    digest = hashlib.sha256(deb).hexdigest()
    if digest != DEB_SHA256:
        raise SystemExit(f"package SHA-256 {digest} is not the pinned {DEB_SHA256}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(args.out)
    counts, text_hash = {}, hashlib.sha256()
    for name, lines in novels(deb).items():
        texts = chapters(lines)
        if len(texts) < 10:
            raise SystemExit(f"{name}: found {len(texts)} chapters; the package changed?")
        (tmp / name).mkdir()
        for i, text in enumerate(texts, start=1):
            (tmp / name / f"{i:03d}.txt").write_text(text, encoding="utf-8")
            text_hash.update(text.encode())
        counts[name] = {"chapters": len(texts), "bytes": sum(len(t.encode()) for t in texts)}
    manifest = {
        "source": DEB_URL,
        "package_sha256": DEB_SHA256,
        "text_sha256": text_hash.hexdigest(),
        "documents": sum(c["chapters"] for c in counts.values()),
        "bytes": sum(c["bytes"] for c in counts.values()),
        "novels": counts,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    replace_dir(tmp, args.out)
    print(
        f"{manifest['documents']} chapters, {manifest['bytes'] / 1e6:.2f} MB -> {args.out}/ "
        f"(text SHA-256 {manifest['text_sha256'][:16]}); use --data.source '{args.out}/**/*.txt'"
    )


if __name__ == "__main__":
    main()
