"""Fetch the tokenizer benchmark corpus: ~50 MB of English documentation nobody here wrote.

Source: seven Debian bookworm documentation packages, fetched with `apt-get download` (Debian's
package registry through its ordinary client), each pinned by version and by the SHA-256 of the
.deb, unpacked with `dpkg-deb -x`. Text taken from each (files in sorted path order):

  python3.11-doc     Python's reST sources (`_sources/*.txt`)
  perl-doc           Perl's POD documentation (`*.pod`, `*.pod.gz`)
  python-django-doc  Django's HTML documentation, tags stripped
  postgresql-doc-15  PostgreSQL's HTML manual, tags stripped
  git-doc            git's AsciiDoc sources (`*.txt`)
  sqlite3-doc        SQLite's HTML documentation, tags stripped
  octave-doc         GNU Octave's HTML manual, tags stripped

Files that are not strict UTF-8 are skipped (counted in the manifest). Documents are joined with
a blank line. The result, `corpus.txt`, and `manifest.json` (packages, hashes, byte counts, the
corpus SHA-256) go to `<cache>/bpe-corpus/`. If Debian drops a pinned version (a security update
replaces it), the fetch stops with a clear message; update the pin and the README then.

Usage: python benchmarks/corpus.py [--out DIR]   (prints the corpus path on stdout)
It does not tokenize anything.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import html.parser
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = [
    # (package, version, sha256 of the .deb, [(path suffix, how to read)])
    ("python3.11-doc", "3.11.2-6+deb12u9",
     "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be", [(".rst.txt", "text")]),
    ("perl-doc", "5.36.0-7+deb12u4",
     "f4269cff4576d6f02a6756df842988e58451c7e945b08517dd235531b24e48f8",
     [(".pod", "text"), (".pod.gz", "gzip")]),
    ("python-django-doc", "3:3.2.25-0+deb12u7",
     "87307f067916df72e17180d35b7cde5c7ea6080336cda518efd7f6e66988a7ca", [(".html", "html")]),
    ("postgresql-doc-15", "15.20-0+deb12u1",
     "4c44bf2c599f208b3f46454a6cf7a72e25ec46ff74d37b59dd31ad76b00eebb7", [(".html", "html")]),
    ("git-doc", "1:2.39.5-0+deb12u3",
     "3c89668a11053a6bafade3de1f611f4613db31e082af63f43d8c5b69ad8795ec", [(".txt", "text")]),
    ("sqlite3-doc", "3.40.1-2+deb12u2",
     "466e30d7066e2641fa13e56bc662a2ad521b8cc9c17dde9c9dac3d4f105e32f2", [(".html", "html")]),
    ("octave-doc", "7.3.0-2",
     "b27897cc7e3d688daa5cb8f8d1ea47077f3fbd205ce32e22522200ff0c1eadd5", [(".html", "html")]),
]


class _TextOfHtml(html.parser.HTMLParser):
    """Visible text of an HTML page: no script/style, a newline at each block element."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt",
              "dd", "table", "section", "blockquote"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self.parts).splitlines()]
        out: list[str] = []
        for line in lines:  # collapse runs of blank lines left by the markup
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip() + "\n"


def html_to_text(source: str) -> str:
    parser = _TextOfHtml()
    parser.feed(source)
    return parser.text()


def default_dir() -> Path:
    from llm_playground.bpe.wheel_fetch import cache_dir
    return cache_dir() / "bpe-corpus"


def _fetch_deb(package: str, version: str, sha256: str, folder: Path) -> Path:
    proc = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=folder,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise SystemExit(f"corpus: apt-get download {package}={version} failed "
                         f"({proc.stderr.strip().splitlines()[-1:] or 'no output'}); "
                         "the pinned version may have left the archive: update the pin")
    digest = hashlib.sha256(debs[0].read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"corpus: {debs[0].name} has SHA-256 {digest}, pinned {sha256}")
    return debs[0]


def build_corpus(out_dir: Path | None = None) -> Path:
    """Fetch, check and extract the packages; write corpus.txt + manifest.json; return the path."""
    out_dir = Path(out_dir or default_dir())
    corpus = out_dir / "corpus.txt"
    manifest_path = out_dir / "manifest.json"
    if corpus.exists() and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if hashlib.sha256(corpus.read_bytes()).hexdigest() == manifest.get("corpus_sha256"):
            return corpus
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"packages": [], "skipped_not_utf8": 0}
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_path = Path(tmp)
        part = tmp_path / "corpus.part"
        with open(part, "wb") as sink:
            for package, version, sha256, rules in PACKAGES:
                print(f"corpus: {package} {version}", file=sys.stderr)
                deb = _fetch_deb(package, version, sha256, tmp_path)
                root = tmp_path / package
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
                taken = 0
                for path in sorted(p for p in root.rglob("*") if p.is_file()):
                    rule = next((how for suffix, how in rules if path.name.endswith(suffix)), None)
                    if rule is None:
                        continue
                    raw = path.read_bytes()
                    if rule == "gzip":
                        raw = gzip.decompress(raw)
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        manifest["skipped_not_utf8"] += 1
                        continue
                    if rule == "html":
                        text = html_to_text(text)
                    data = text.strip().encode("utf-8") + b"\n\n"
                    sink.write(data)
                    taken += len(data)
                manifest["packages"].append({"package": package, "version": version,
                                             "deb_sha256": sha256, "bytes": taken})
        manifest["corpus_bytes"] = part.stat().st_size
        manifest["corpus_sha256"] = hashlib.sha256(part.read_bytes()).hexdigest()
        part.replace(corpus)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the user cache)")
    args = parser.parse_args(argv)
    path = build_corpus(args.out)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
