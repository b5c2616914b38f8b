"""The ``vllm-retrieval`` command line, driven as a user would: real subprocesses, real engine.

Each engine start costs tens of seconds on small CPUs, so the engine-using commands run in two
processes: ``index`` on part of a corpus (quiet: no vLLM logs), then one ``steps`` process (a
hidden subcommand that runs several command lines in one process; its first step has ``-v``,
so vLLM's logs show) doing the resumed ``index``, ``search`` calls (one query, several, from a
file and from standard input) and two ``eval`` calls. The error cases fail before any engine
starts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vllm_retrieval.cli import STEP_MARK, chunk_text, main, parse_filters, read_inputs
from vllm_retrieval.evaluation import (
    BeirData,
    evaluate_run,
    load_beir,
    load_qrels,
    sentence_transformers_dense_run,
)
from vllm_retrieval.store import MODES

SAMPLE = (
    Path(__file__).resolve().parents[1] / "integrations/vllm_retrieval/data/sample_corpus.jsonl"
)

EXTRA_DOCS = [
    ("glacier", "Glaciers carve U-shaped valleys as moving ice scrapes rock.", "geology", 2019),
    ("tides", "Ocean tides follow the moon's gravity, with two highs a day.", "physics", 2016),
    ("honey", "Bees make honey by evaporating flower nectar inside wax combs.", "biology", 2015),
    ("chess", "In chess the bishop moves diagonally across any number of squares.", "games", 2012),
    (
        "sushi",
        "Sushi rice is seasoned with vinegar, sugar and salt before shaping.",
        "cooking",
        2018,
    ),
    (
        "rust",
        "Iron rusts when oxygen and water oxidise it into hydrated iron oxide.",
        "chemistry",
        2014,
    ),
]
QUERIES = {
    "q1": ("Which enzyme edits genes?", {"crispr": 1}),
    "q2": ("how do you make bread rise", {"bread": 1}),
    "q3": ("late interaction scoring of query tokens", {"colbert": 1, "colbertv2": 1}),
    "q4": ("why does iron turn orange in the rain", {"rust": 1}),
    "q5": ("what moves the sea level twice a day", {"tides": 1}),
}
CHUNKING = ("--chunk-size", "120", "--chunk-overlap", "0")
NOTES = {
    "guide.md": "# Indexing notes\n\nThe store keeps one dense vector and one matrix of token "
    "vectors per chunk.\n\nMaxSim sums the best cosine per query token.",
    "sub/readme.txt": "Plain text files are split into chunks by paragraphs and sentences.",
}


def _corpus_rows() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    rows += [{"id": i, "text": t, "topic": tp, "year": y} for i, t, tp, y in EXTRA_DOCS]
    return rows


def _write_beir(folder: Path, data: BeirData, split: str) -> None:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for doc_id, (title, text) in data.corpus.items():
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as fh:
        for qid, text in data.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (folder / "qrels" / f"{split}.tsv").open("w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in data.qrels.items():
            for did, rel in rels.items():
                fh.write(f"{qid}\t{did}\t{rel}\n")


def _chunks(name: str, text: str, size: int, overlap: int) -> list[str]:
    """The chunks `index` makes of a file: Markdown files use the Markdown splitter."""
    return chunk_text(text, size, overlap, markdown=name.endswith(".md"))


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "vllm-retrieval"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "vllm_retrieval.cli"]


def _run(
    *args: str, timeout: float = 1800, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin if stdin is not None else "",
        env=env,
    )


# A vLLM log line: "(EngineCore pid=12) INFO 12-02 21:57:19 [core.py:402] ..." (also WARNING)
VLLM_LOG = re.compile(r"\b(INFO|WARNING) \d\d-\d\d \d\d:\d\d:\d\d \[")
FILE_QUERIES = ["Which enzyme edits genes?", "", "  why does iron turn orange in the rain  "]
STDIN_QUERIES = "what moves the sea level twice a day\nhow do you make bread rise\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, scifact_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cli")
    rows = _corpus_rows()
    assert len(rows) == 30
    # the first 20 documents as a plain JSONL, the full corpus as BEIR
    with (root / "part.jsonl").open("w") as fh:
        for row in rows[:20]:
            fh.write(json.dumps(row) + "\n")
    beir = root / "tiny"
    (beir / "qrels").mkdir(parents=True)
    with (beir / "corpus.jsonl").open("w") as fh:
        for row in rows:
            extra = {"topic": row["topic"], "year": row["year"]}
            fh.write(json.dumps({"_id": row["id"], "title": "", "text": row["text"], **extra}))
            fh.write("\n")
    with (beir / "queries.jsonl").open("w") as fh:
        for qid, (text, _) in QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (beir / "qrels" / "test.tsv").open("w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, (_, rels) in QUERIES.items():
            for did, rel in rels.items():
                fh.write(f"{qid}\t{did}\t{rel}\n")
    notes = root / "notes"
    for name, text in NOTES.items():
        (notes / name).parent.mkdir(parents=True, exist_ok=True)
        (notes / name).write_text(text)
    # a SciFact subset (30 training claims, their abstracts + 150 others) for the parity check
    sub = load_beir(scifact_dir, "train").subset(30, 150)
    _write_beir(root / "scifact_sub", sub, "train")
    index = root / "index"
    qfile = root / "queries.txt"
    qfile.write_text("\n".join(FILE_QUERIES) + "\n")

    first = _run("index", "--index", str(index), str(root / "part.jsonl"), str(notes), *CHUNKING)
    assert first.returncode == 0, first.stderr[-3000:]

    steps = [
        f"index --index {index} {beir / 'corpus.jsonl'} -v",
        f"search --index {index} 'Which enzyme edits genes?' -k 3",
        f"search --index {index} 'how do you make bread rise' -k 5 --mode dense --json "
        "--filter topic=cooking --filter 'year>=2000'",
        f"search --index {index} 'late interaction scoring of query tokens' -k 2 --explain",
        f"eval --beir {beir} --index {index} --split test --json",
        f"eval --beir {root / 'scifact_sub'} --index {root / 'sub_index'} --split train "
        "--modes dense hybrid --json --no-progress",
        # the notes again: same chunks, same ids, so every one is skipped
        f"index --index {index} {notes} {' '.join(CHUNKING)}",
        f"search --index {index} 'Which enzyme edits genes?' -k 3 --mode bm25 --json",
        f"search --index {index} 'Which enzyme edits genes?' -k 3 --mode fusion --fusion rrf "
        "--fuse bm25 maxsim --weights 2 1 --json",
        # several queries: arguments, a file, standard input; one block each
        f"search --index {index} 'Which enzyme edits genes?' 'how do you make bread rise' -k 2",
        f"search --index {index} --queries-file {qfile} -k 1 --mode dense --json",
        f"search --index {index} 'Which enzyme edits genes?' --queries-file - -k 1 --mode dense",
    ]
    second = _run("steps", *steps, stdin=STDIN_QUERIES)
    assert second.returncode == 0, second.stderr[-3000:]
    parts = second.stdout.split(STEP_MARK)[1:]
    assert len(parts) == len(steps), second.stdout
    outputs = [p.split("\n", 1)[1] for p in parts]
    n_chunks = sum(len(_chunks(name, text, 120, 0)) for name, text in NOTES.items())
    return {
        "first": first,
        "second": second,
        "outputs": outputs,
        "subset": sub,
        "chunks": n_chunks,
        "total": len(rows) + n_chunks,
    }


def test_index_reports_new_documents_with_progress(workspace: dict[str, Any]) -> None:
    first = workspace["first"]
    # 20 JSONL rows + the chunks of the notes folder
    assert workspace["chunks"] >= 3
    assert f"indexed {20 + workspace['chunks']} new documents" in first.stdout, first.stdout
    assert "Indexing" in first.stderr  # the tqdm progress bar


def test_index_is_resumable(workspace: dict[str, Any]) -> None:
    out = workspace["outputs"][0]
    assert "indexed 10 new documents" in out, out
    assert f"skipped 20 already stored; {workspace['total']} in" in out, out


def test_reindexing_text_files_skips_every_chunk(workspace: dict[str, Any]) -> None:
    out = workspace["outputs"][6]
    assert "indexed 0 new documents" in out, out
    assert f"skipped {workspace['chunks']} already stored; {workspace['total']} in" in out, out


def test_search_table(workspace: dict[str, Any]) -> None:
    out = workspace["outputs"][1]
    lines = out.strip().splitlines()
    # the engine's start first, on its own line; then the search's own time
    assert re.fullmatch(
        r"engine: ready in \d+\.\d s \(in-process vLLM, .+\); not counted below", lines[0]
    ), out
    assert lines[1].startswith("fusion search, 3 results"), out  # the default mode
    assert lines[2].split() == ["#", "score", "id", "text"]
    assert lines[3].split()[2] == "crispr", out


def test_index_reports_engine_start_apart(workspace: dict[str, Any]) -> None:
    out = workspace["first"].stdout
    assert re.search(r"^engine: ready in \d+\.\d s \(not counted above\)$", out, re.M), out


def _blocks(out: str) -> list[list[str]]:
    """The result blocks of a table search: (header, table rows...) per query."""
    blocks: list[list[str]] = []
    for line in out.splitlines():
        if " search, " in line and " results in " in line:
            blocks.append([line])
        elif blocks and line.strip():
            blocks[-1].append(line)
    return blocks


def test_search_many_queries_one_engine_start(workspace: dict[str, Any]) -> None:
    out = workspace["outputs"][9]
    assert out.count("engine: ready in") == 1, out
    blocks = _blocks(out)
    assert [b[0].rsplit(": ", 1)[1] for b in blocks] == [
        "'Which enzyme edits genes?'",
        "'how do you make bread rise'",
    ], out
    assert [b[2].split()[2] for b in blocks] == ["crispr", "bread"], out
    ranks = [[ln.split()[0] for ln in b[2:] if ln.split()[0].isdigit()] for b in blocks]
    assert ranks == [["1", "2"], ["1", "2"]], out  # -k 2 per query (metadata lines aside)


def test_search_queries_file_json_lines(workspace: dict[str, Any]) -> None:
    lines = workspace["outputs"][10].strip().splitlines()
    payloads = [json.loads(line) for line in lines]  # one JSON object per line and query
    assert [p["query"] for p in payloads] == [
        "Which enzyme edits genes?",
        "why does iron turn orange in the rain",  # blank lines skipped, text stripped
    ]
    assert [p["results"][0]["id"] for p in payloads] == ["crispr", "rust"]
    assert all(p["engine_start_s"] >= 0 and p["latency_ms"] > 0 for p in payloads)


def test_search_queries_from_stdin_after_arguments(workspace: dict[str, Any]) -> None:
    blocks = _blocks(workspace["outputs"][11])
    assert [b[0].rsplit(": ", 1)[1] for b in blocks] == [
        "'Which enzyme edits genes?'",
        "'what moves the sea level twice a day'",
        "'how do you make bread rise'",
    ]
    assert [b[2].split()[2] for b in blocks] == ["crispr", "tides", "bread"]


def test_vllm_logs_only_with_verbose(workspace: dict[str, Any]) -> None:
    first, second = workspace["first"], workspace["second"]
    # without -v: our results and progress only, no vLLM INFO/WARNING (shutdown included)
    quiet = first.stdout + first.stderr
    assert not VLLM_LOG.search(quiet), [ln for ln in quiet.splitlines() if VLLM_LOG.search(ln)]
    assert "Traceback" not in quiet
    # with -v (the steps process's first step): vLLM's own logs, on standard error only
    assert VLLM_LOG.search(second.stderr), second.stderr[-2000:]
    assert not VLLM_LOG.search(second.stdout)


def test_search_json_with_filters(workspace: dict[str, Any]) -> None:
    payload = json.loads(workspace["outputs"][2])
    results = payload["results"]
    assert payload["mode"] == "dense"
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    assert results[0]["id"] == "bread"
    assert {r["metadata"]["topic"] for r in results} == {"cooking"}
    assert len(results) == 3  # bread, pasta, sushi (coffee's year is 1901)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_search_explain(workspace: dict[str, Any]) -> None:
    out = workspace["outputs"][3]
    assert "Why 'colbert" in out, out
    assert "best document token" in out
    # one alignment row per query token, each naming a document token and a cosine
    rows = out.split("best document token", 1)[1].strip().splitlines()[1:]
    assert len(rows) >= 5
    assert all(-1.0 <= float(r.split()[-1]) <= 1.0001 for r in rows)


def test_eval_tiny_corpus(workspace: dict[str, Any]) -> None:
    report = json.loads(workspace["outputs"][4])
    assert report["queries"] == 5
    assert report["documents"] == workspace["total"]  # the corpus and the note chunks
    assert report["documents_encoded"] == 0 and report["documents_reused"] == 30
    modes = {r["mode"]: r for r in report["results"]}
    assert set(modes) == set(MODES)  # every mode, bm25 included, in one table
    assert report["bm25"]["language"] == "english" and report["bm25"]["measured_docs"] > 0
    for mode, r in modes.items():
        assert 50.0 <= r["nDCG@10"] <= 100.0, (mode, r)
        if mode != "bm25":  # BM25 cannot find a relevant document sharing no term
            assert r["recall@100"] == 100.0, (mode, r)
        assert r["latency_ms"] > 0


def test_search_bm25_and_fusion_flags(workspace: dict[str, Any]) -> None:
    bm25 = json.loads(workspace["outputs"][7])
    assert bm25["mode"] == "bm25"
    assert bm25["results"][0]["id"] == "crispr", bm25
    scores = [r["score"] for r in bm25["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    fused = json.loads(workspace["outputs"][8])
    assert fused["mode"] == "fusion"
    assert fused["results"][0]["id"] == "crispr", fused
    # weighted RRF of two lists, k=60: at most 2/61 + 1/61
    assert 0 < fused["results"][0]["score"] <= 3 / 61 + 1e-6


def test_eval_dense_matches_sentence_transformers(workspace: dict[str, Any]) -> None:
    report = json.loads(workspace["outputs"][5])
    modes = {r["mode"]: r for r in report["results"]}
    assert report["queries"] == 30 and report["documents_encoded"] == report["documents"]
    sub: BeirData = workspace["subset"]
    reference = 100 * evaluate_run(sub.qrels, sentence_transformers_dense_run(sub))["nDCG@10"]
    assert abs(modes["dense"]["nDCG@10"] - reference) <= 0.5, (modes["dense"], reference)


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no id and no text"}\n')
    for args in (
        ("index", "--index", str(tmp_path / "i"), str(tmp_path / "missing.jsonl")),
        ("index", "--index", str(tmp_path / "i"), str(bad)),
        ("search", "--index", str(tmp_path / "nothing"), "a query"),
    ):
        res = _run(*args, timeout=600)
        assert res.returncode != 0
        assert "Traceback" not in res.stderr
        errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and errors[0].startswith("vllm-retrieval: error: "), res.stderr
    assert not (tmp_path / "i").exists()  # nothing was created


def test_help_is_complete(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("index", "search", "eval"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for option in ("--model", "--query-prefix", "--max-length", "--base-url", "--dtype"):
            assert option in text, (cmd, option)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "encode" in capsys.readouterr().out


def test_bench_unknown_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_chunking_and_filters(tmp_path: Path) -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "A sentence here. " * 12 for i in range(5))
    chunks = chunk_text(text, 300, 50)
    assert all(len(c) <= 300 for c in chunks) and len(chunks) >= 5
    assert "".join(chunks).count("Paragraph") >= 5
    assert chunk_text("short text") == ["short text"]
    with pytest.raises(ValueError):
        chunk_text("x", 10, 10)
    assert parse_filters(["year>=2010", "topic=nlp", "ok=true"]) == {
        "$and": [{"year": {"$gte": 2010}}, {"topic": "nlp"}, {"ok": True}]
    }
    assert parse_filters(['{"topic": {"$in": ["a", "b"]}}']) == {"topic": {"$in": ["a", "b"]}}
    trec = tmp_path / "q.trec"
    trec.write_text("1 0 d1 1\n1 0 d2 0\n2 0 d3 2\n")
    assert load_qrels(trec) == {"1": {"d1": 1, "d2": 0}, "2": {"d3": 2}}


def test_text_files_are_chunked_by_langchain_splitters(tmp_path: Path) -> None:
    from langchain_text_splitters import MarkdownTextSplitter, RecursiveCharacterTextSplitter

    notes = tmp_path / "notes"
    md = (
        "# Title\nIntro paragraph about late interaction and token vectors.\n"
        "## Scoring\nMaxSim sums the best cosine per query token over the document tokens.\n"
        "## Storage\nThe store keeps one dense vector and one matrix of token vectors per chunk.\n"
        "```\ncode = 1\n```\n"
    )
    txt = "\n\n".join(f"Paragraph {i}. " + "A sentence here. " * 6 for i in range(4))
    (notes / "sub").mkdir(parents=True)
    (notes / "guide.md").write_text(md)
    (notes / "sub" / "plain.txt").write_text(txt)
    (notes / "ignored.json").write_text("{}")

    docs = read_inputs([notes], 150, 30)
    expected_md = MarkdownTextSplitter(chunk_size=150, chunk_overlap=30).split_text(md)
    expected_txt = RecursiveCharacterTextSplitter(chunk_size=150, chunk_overlap=30).split_text(txt)
    assert len(expected_md) >= 3 and len(expected_txt) >= 3
    assert expected_md != chunk_text(md, 150, 30)  # .md files do use the Markdown splitter
    assert [d[1] for d in docs] == expected_md + expected_txt
    assert all(len(d[1]) <= 150 for d in docs)
    assert [d[0] for d in docs] == [f"guide.md#{i}" for i in range(len(expected_md))] + [
        f"sub/plain.txt#{i}" for i in range(len(expected_txt))
    ]
    assert docs[1][2] == {"source": "guide.md", "chunk": 1}
    # a re-run gives the same ids and texts, so `index` skips what is already stored
    assert read_inputs([notes], 150, 30) == docs
    assert read_inputs([notes / "sub" / "plain.txt"], 150, 30) == [
        (i.replace("sub/", ""), t, {**m, "source": "plain.txt"})
        for i, t, m in docs[len(expected_md) :]
    ]


def test_missing_text_splitters_names_the_cli_extra(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text to chunk")
    code = (
        "import sys\n"
        "sys.modules['langchain_text_splitters'] = None  # as if it were not installed\n"
        "from vllm_retrieval.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    index = tmp_path / "idx"
    res = subprocess.run(
        [sys.executable, "-c", code, "index", "--index", str(index), str(tmp_path / "a.txt")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("vllm-retrieval: error: ")
    assert "pip install 'vllm-retrieval[cli]'" in lines[0]
    assert not index.exists()  # failed before any store or engine


def test_errors_name_their_type_and_verbose_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    args = ("search", "--index", str(missing), "a query")
    res = _run(*args, timeout=600)
    assert res.returncode == 1
    line = (
        f"vllm-retrieval: error: FileNotFoundError: no index at {missing} "
        "(build one with `vllm-retrieval index`)"
    )
    assert res.stderr.strip().splitlines() == [line], res.stderr
    verbose = _run(*args, "-v", timeout=600)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr, verbose.stderr
    assert "cmd_search" in verbose.stderr  # the frames, not only the message
    assert verbose.stderr.strip().splitlines()[-1] == line


def test_api_key_is_refused_on_the_command_line(tmp_path: Path) -> None:
    res = _run(
        "search",
        "--index",
        str(tmp_path),
        "a query",
        "--base-url",
        "http://127.0.0.1:9",
        "--api-key",
        "sekrit",
        timeout=600,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vllm-retrieval: error: --api-key"), lines
    assert "VLLM_API_KEY" in lines[0] and "--api-key-file" in lines[0]
    assert "sekrit" not in res.stderr


def test_api_key_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm_retrieval.cli import build_parser
    from vllm_retrieval.cli.common import CLIError, api_key, make_encoder

    key = tmp_path / "key"
    key.write_text("sekrit\n")
    parser = build_parser()
    base = ["search", "--index", str(tmp_path), "q", "--base-url", "http://127.0.0.1:9"]
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert api_key(parser.parse_args(base)) is None
    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    from_env = api_key(parser.parse_args(base))
    assert from_env is not None and from_env.get_secret_value() == "from-env"
    args = parser.parse_args([*base, "--api-key-file", str(key)])
    from_file = api_key(args)  # the file wins; its newline is not part of the key
    assert from_file is not None and from_file.get_secret_value() == "sekrit"
    assert "sekrit" not in repr(from_file)
    encoder = make_encoder(args)  # remote: no engine starts
    assert encoder.api_key is not None and encoder.api_key.get_secret_value() == "sekrit"
    (tmp_path / "empty").write_text("\n")
    for bad, needle in ((tmp_path / "empty", "is empty"), (tmp_path / "none", "cannot read")):
        with pytest.raises(CLIError, match=needle):
            api_key(parser.parse_args([*base, "--api-key-file", str(bad)]))


def test_help_imports_neither_vllm_nor_torch() -> None:
    code = (
        "import sys\n"
        "from vllm_retrieval.cli import main\n"
        "try:\n"
        "    main(['search', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('vllm', 'torch', 'transformers', 'qdrant_edge', 'qdrant_client')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "HEAVY []", res.stdout
    for option in ("--queries-file", "--api-key-file", "QUERY"):
        assert option in res.stdout, option
    assert "--api-key " not in res.stdout  # refused, so not offered
