"""The cookbook notebooks execute, top to bottom, and leave their charts.

``cookbook/*.py`` are jupytext percent-format notebooks (the ``.ipynb`` files are generated,
not versioned). Each one is converted with ``jupytext --to ipynb`` into a temporary folder
and executed by ``nbmake`` in its own kernel (each kernel starts its own vLLM engine). The
notebooks' own ``assert`` cells check their results; the PNGs land in ``cookbook/output/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COOKBOOK = REPO / "cookbook"
OUTPUT = COOKBOOK / "output"
NOTEBOOKS = sorted(p.name for p in COOKBOOK.glob("[0-9][0-9]_*.py"))
PNGS = {
    "03_scifact_evaluation.py": ["03_ndcg_by_mode.png", "03_latency_vs_candidates.png"],
    "04_why_did_this_document_win.py": ["04_maxsim_heatmap.png", "04_token_contributions.png"],
    "05_search_pdf_pages.py": ["05_patch_matches.png"],
}


def test_notebooks_are_paired() -> None:
    assert NOTEBOOKS == [
        "01_langchain_rag.py",
        "02_llamaindex_query_engine.py",
        "03_scifact_evaluation.py",
        "04_why_did_this_document_win.py",
        "05_search_pdf_pages.py",
    ]
    for name in NOTEBOOKS:
        head = (COOKBOOK / name).read_text().split("# ---", 2)[1]
        assert "format_name: percent" in head and "formats: ipynb,py:percent" in head


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name: str, tmp_path: Path, scifact_dir: Path) -> None:
    if name == "05_search_pdf_pages.py":
        sys.path.insert(0, str(REPO / "tests"))
        import _vlm

        if _vlm.missing():
            pytest.skip(f"the tiny vision-language model cannot be built: {_vlm.missing()}")
    source = tmp_path / name
    shutil.copy(COOKBOOK / name, source)
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--to", "ipynb", str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    notebook = source.with_suffix(".ipynb")
    assert notebook.is_file()
    for png in PNGS.get(name, []):
        (OUTPUT / png).unlink(missing_ok=True)
    env = {
        **os.environ,
        "COOKBOOK_OUTPUT": str(OUTPUT),
        "SCIFACT_DIR": str(scifact_dir),
        "MPLBACKEND": "Agg",
        "VLLM_RETRIEVAL_REPO": str(REPO),
    }
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbmake",
            "--nbmake-timeout=1500",
            "-p",
            "no:cacheprovider",
            "-q",
            str(notebook),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    for png in PNGS.get(name, []):
        path = OUTPUT / png
        assert path.is_file() and path.stat().st_size > 10_000, path
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
