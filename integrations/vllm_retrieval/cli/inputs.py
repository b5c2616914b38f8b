"""The inputs of ``index``: BEIR and plain JSONL files, text and Markdown files in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import require

__all__ = [
    "IMAGE_SUFFIXES",
    "MARKDOWN_SUFFIXES",
    "TEXT_SUFFIXES",
    "Doc",
    "PageImage",
    "chunk_text",
    "read_image_inputs",
    "read_inputs",
    "split_inputs",
]

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
MARKDOWN_SUFFIXES = (".md", ".markdown")  # chunked with MarkdownTextSplitter
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PDF_SUFFIX = ".pdf"
PDF_SCALE = 2.0  # 144 dpi: the model's processor resizes to its own pixel budget anyway

Doc = tuple[str, str, dict[str, Any]]


def _splitter(chunk_size: int, overlap: int, *, markdown: bool) -> Any:
    splitters = require("langchain_text_splitters", "cli")
    cls = splitters.MarkdownTextSplitter if markdown else splitters.RecursiveCharacterTextSplitter
    return cls(chunk_size=chunk_size, chunk_overlap=overlap)


def chunk_text(
    text: str, chunk_size: int = 1000, overlap: int = 100, *, markdown: bool = False
) -> list[str]:
    """Split ``text`` into chunks of at most ``chunk_size`` characters.

    Uses ``langchain-text-splitters`` (the ``cli`` extra): ``RecursiveCharacterTextSplitter``
    (paragraphs, then lines, then words), or with ``markdown=True`` its ``MarkdownTextSplitter``
    (headings, code fences and rules first). Consecutive chunks share up to ``overlap``
    characters. Raises an ImportError naming the extra when the package is missing.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk size must be > 0, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise ValueError(f"chunk overlap must be in [0, chunk size), got {overlap}")
    splitter = _splitter(chunk_size, overlap, markdown=markdown)
    return [c for c in splitter.split_text(text) if c.strip()]


def _read_jsonl(path: Path) -> Iterator[Doc]:
    from ..evaluation import _jsonl

    for row in _jsonl(path):
        if "_id" in row:  # BEIR corpus row
            title = str(row.get("title") or "")
            text = (title + " " + str(row.get("text") or "")).strip()
            meta = {k: v for k, v in row.items() if k not in ("_id", "text", "title")}
            if title:
                meta["title"] = title
            yield str(row["_id"]), text, meta
        elif "id" in row and "text" in row:
            meta = {k: v for k, v in row.items() if k not in ("id", "text")}
            yield str(row["id"]), str(row["text"]), meta
        else:
            raise ValueError(
                f"{path}: rows need 'id' and 'text' (or BEIR '_id', 'title', 'text'); "
                f"got keys {sorted(row)[:6]}"
            )


def _read_text_file(path: Path, name: str, chunk_size: int, overlap: int) -> Iterator[Doc]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    markdown = path.suffix.lower() in MARKDOWN_SUFFIXES
    for i, chunk in enumerate(chunk_text(text, chunk_size, overlap, markdown=markdown)):
        yield f"{name}#{i}", chunk, {"source": name, "chunk": i}


def read_inputs(inputs: Sequence[Path], chunk_size: int = 1000, overlap: int = 100) -> list[Doc]:
    """``(id, text, metadata)`` for every document of the inputs; empty texts are dropped."""
    docs: list[Doc] = []
    for inp in inputs:
        if not inp.exists():
            raise FileNotFoundError(f"input {inp} does not exist")
        if inp.is_dir():
            if (inp / "corpus.jsonl").is_file():
                docs.extend(_read_jsonl(inp / "corpus.jsonl"))
                continue
            files = sorted(
                f for f in inp.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
            )
            if not files:
                raise ValueError(f"{inp} holds no corpus.jsonl and no .txt/.md files")
            for f in files:
                name = f.relative_to(inp).as_posix()
                docs.extend(_read_text_file(f, name, chunk_size, overlap))
        elif inp.suffix.lower() == ".jsonl":
            docs.extend(_read_jsonl(inp))
        elif inp.suffix.lower() in TEXT_SUFFIXES:
            docs.extend(_read_text_file(inp, inp.name, chunk_size, overlap))
        else:
            raise ValueError(
                f"{inp}: unsupported input (use .jsonl, .txt, .md files or folders of them)"
            )
    docs = [d for d in docs if d[1].strip()]
    if not docs:
        raise ValueError("the inputs hold no text to index")
    return docs


class PageImage:
    """One image document: an image file, or one page of a PDF rendered on demand."""

    __slots__ = ("doc_id", "page", "path", "ref")

    def __init__(self, path: Path, name: str, page: int | None = None) -> None:
        self.path, self.page = path, page
        self.doc_id = name if page is None else f"{name}#page={page + 1}"
        self.ref = str(path.resolve()) + ("" if page is None else f"#page={page + 1}")

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"source": self.doc_id.split("#")[0], "image": self.ref}
        if self.page is not None:
            meta["page"] = self.page + 1
        return meta

    def load(self) -> Any:
        """The image (a PIL image for a PDF page, the file's path otherwise)."""
        if self.page is None:
            return self.path
        pdfium = require("pypdfium2", "images")
        pdf = pdfium.PdfDocument(str(self.path))
        try:
            return pdf[self.page].render(scale=PDF_SCALE).to_pil().convert("RGB")
        finally:
            pdf.close()


def _pdf_pages(path: Path, name: str) -> list[PageImage]:
    pdfium = require("pypdfium2", "images")
    try:
        pdf = pdfium.PdfDocument(str(path))
    except Exception as exc:  # pdfium raises its own error types
        raise ValueError(f"{path} is not a readable PDF: {exc}") from None
    try:
        return [PageImage(path, name, i) for i in range(len(pdf))]
    finally:
        pdf.close()


def _is_image_input(path: Path) -> bool:
    return path.suffix.lower() in (*IMAGE_SUFFIXES, PDF_SUFFIX)


def split_inputs(inputs: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """``(text inputs, image inputs)``: image files, PDFs, and folders holding only those."""
    texts: list[Path] = []
    images: list[Path] = []
    for inp in inputs:
        if inp.is_dir() and not (inp / "corpus.jsonl").is_file():
            files = [f for f in inp.rglob("*") if f.is_file()]
            has_images = any(_is_image_input(f) for f in files)
            has_texts = any(f.suffix.lower() in TEXT_SUFFIXES for f in files)
            if has_images:
                images.append(inp)
            if has_texts or not has_images:
                texts.append(inp)
        elif _is_image_input(inp):
            images.append(inp)
        else:
            texts.append(inp)
    return texts, images


def read_image_inputs(inputs: Sequence[Path]) -> list[PageImage]:
    """Every image document of the inputs: image files and each page of each PDF."""
    out: list[PageImage] = []
    for inp in inputs:
        if not inp.exists():
            raise FileNotFoundError(f"input {inp} does not exist")
        files = (
            sorted(f for f in inp.rglob("*") if f.is_file() and _is_image_input(f))
            if inp.is_dir()
            else [inp]
        )
        for f in files:
            name = f.relative_to(inp).as_posix() if inp.is_dir() else f.name
            if f.suffix.lower() == PDF_SUFFIX:
                out.extend(_pdf_pages(f, name))
            else:
                out.append(PageImage(f, name))
    return out
