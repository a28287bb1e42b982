"""The Chinese edition: translation files, their freshness, and the Chinese book's sources.

One source of code and outputs: a Chinese chapter is the English notebook with each markdown
cell replaced by its translation; code cells and outputs are copied byte for byte. Translations
live in ``translations/zh/``, one Markdown file per chapter or page, a block per markdown cell::

    <!-- cell 5e59d4ae en:1a2b3c4d -->
    中文译文……

``5e59d4ae`` is the cell's id, ``1a2b3c4d`` the first 8 hex digits of the SHA-1 of the English
cell it translates: when the English cell changes, the block is reported as stale. A book page
(``book/*.md``) is one block, ``<!-- page en:... -->``.

    python book/translate.py skeleton   # add a block (English text, to translate) for every
                                        # cell or page without one; never overwrites
    python book/translate.py check      # missing, stale or untranslated blocks: exit 1
    python book/translate.py build DIR  # the Chinese book's sources in DIR (jupyter-book build)
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZH = ROOT / "translations" / "zh"
PAGES = ("intro", "setup", "faq", "serving", "glossary", "references")
HEADER = re.compile(r"^<!-- (cell ([\w-]+)|page) en:([0-9a-f]{8}) -->$", re.M)
# a paragraph with Latin words and no CJK character is English left untranslated, unless it
# is code, math, a table row of terms, a link list or an HTML tag
CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")


def digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def markdown_cells(path: Path) -> list[tuple[str, str]]:
    """(id, source) of every markdown cell of a notebook, in order."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(c["id"], "".join(c["source"])) for c in cells if c["cell_type"] == "markdown"]


def sources() -> dict[Path, list[tuple[str, str]]]:
    """Every translation file and the English blocks it must hold: key (cell id or "page"),
    English text."""
    out = {ZH / "notebooks" / f"{p.stem}.md": markdown_cells(p) for p in notebooks()}
    for page in PAGES:
        out[ZH / "book" / f"{page}.md"] = [("page", (ROOT / "book" / f"{page}.md").read_text())]
    return out


def read_blocks(path: Path) -> dict[str, tuple[str, str]]:
    """key -> (English digest, translated text) of a translation file."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    parts = HEADER.split(text)
    blocks = {}
    for i in range(1, len(parts), 4):
        key = parts[i + 1] or "page"
        blocks[key] = (parts[i + 2], parts[i + 3].strip("\n"))
    return blocks


def untranslated(text: str) -> list[str]:
    """Paragraphs of prose with no Chinese character in them."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)  # display math
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        prose = re.sub(r"`[^`]*`|\$[^$]*\$|<[^>]+>|\[[^\]]*\]\([^)]*\)|https?://\S+", "", paragraph)
        if len(re.findall(r"[A-Za-z]{3,}", prose)) >= 4 and not CJK.search(prose):
            found.append(paragraph.strip()[:80])
    return found


def join_lines(text: str) -> str:
    """Join a paragraph's lines where Chinese meets Chinese: a line break there would show as a
    space in the page (CJK text has no spaces between words). Code blocks are left alone."""
    out, fenced = [], False
    for line in text.split("\n"):
        previous = out[-1] if out else ""
        joinable = (
            not fenced
            and not previous.lstrip().startswith("#")  # a heading is a line of its own
            and CJK.search(previous[-1:] or " ")
            and CJK.search(line.lstrip()[:1] or " ")
        )
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if joinable:
            out[-1] = previous + line.lstrip()
        else:
            out.append(line)
    return "\n".join(out)


def problems(expected: dict | None = None) -> list[str]:
    """Every missing, stale, untranslated or orphaned block, one line each (``expected``: the
    files and blocks to check, :func:`sources` by default)."""
    out = []
    for path, cells in (expected or sources()).items():
        name = path.relative_to(ROOT)
        blocks = read_blocks(path)
        for key, english in cells:
            if key not in blocks:
                out.append(f"{name}: no translation of {key}")
            elif blocks[key][0] != digest(english):
                out.append(f"{name}: {key} is stale (the English changed; update it and its en:)")
            else:
                out += [
                    f"{name}: {key} has English left: {p!r}" for p in untranslated(blocks[key][1])
                ]
        orphans = set(blocks) - {key for key, _ in cells}
        out += [f"{name}: {key} translates no English cell (remove it)" for key in sorted(orphans)]
    return out


def header(key: str, english: str) -> str:
    return f"<!-- {'page' if key == 'page' else 'cell ' + key} en:{digest(english)} -->"


def skeleton() -> None:
    """Append a block with the English text for every cell or page without a translation."""
    for path, cells in sources().items():
        blocks = read_blocks(path)
        new = [f"{header(k, e)}\n{e}\n" for k, e in cells if k not in blocks]
        if new:
            path.parent.mkdir(parents=True, exist_ok=True)
            old = path.read_text(encoding="utf-8") if path.exists() else ""
            path.write_text(old + ("\n" if old else "") + "\n".join(new), encoding="utf-8")


def translated_notebook(path: Path) -> dict:
    """The English notebook with every markdown cell replaced by its translation."""
    blocks = read_blocks(ZH / "notebooks" / f"{path.stem}.md")
    notebook = json.loads(path.read_text(encoding="utf-8"))
    out = copy.deepcopy(notebook)
    for cell in out["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = join_lines(blocks[cell["id"]][1]).splitlines(keepends=True)
    return out


def build(dest: Path) -> None:
    """The Chinese book's sources in ``dest``: translated pages and notebooks, the same figures,
    configuration and table of contents (title and language changed)."""
    found = problems()
    if found:
        raise SystemExit("translations are not complete and current:\n" + "\n".join(found))
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "book").mkdir(parents=True)
    (dest / "notebooks").mkdir()
    for page in PAGES:
        text = read_blocks(ZH / "book" / f"{page}.md")["page"][1]
        (dest / "book" / f"{page}.md").write_text(join_lines(text) + "\n", encoding="utf-8")
    for path in notebooks():
        target = dest / "notebooks" / path.name
        target.write_text(
            json.dumps(translated_notebook(path), indent=1, ensure_ascii=False) + "\n"
        )
    shutil.copytree(ROOT / "notebooks" / "figures", dest / "notebooks" / "figures")
    shutil.copytree(ROOT / "_static", dest / "_static")
    shutil.copy(ROOT / "_toc.yml", dest / "_toc.yml")
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    config = config.replace(
        'title: "From Scratch to Fine-Tuning · 从零开始大模型开发与微调"',
        'title: "从零开始大模型开发与微调 · From Scratch to Fine-Tuning"',
    )
    config = config.replace("  config:\n", "  config:\n    language: zh_CN\n", 1)
    (dest / "_config.yml").write_text(config, encoding="utf-8")


def main(argv: list[str]) -> int:
    if argv[:1] == ["skeleton"]:
        skeleton()
        return 0
    if argv[:1] == ["check"]:
        found = problems()
        print("\n".join(found) or "every translation is present and current")
        return 1 if found else 0
    if len(argv) == 2 and argv[0] == "build":
        build(Path(argv[1]))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
