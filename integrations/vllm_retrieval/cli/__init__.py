"""The ``vllm-retrieval`` command line: index, search, eval and bench.

::

    vllm-retrieval index  --index DIR INPUT...        # BEIR corpus.jsonl, JSONL, .txt/.md files
    vllm-retrieval search --index DIR "query" ["query"...] [--queries-file FILE|-] [-k 10]
                          [--mode hybrid] [--filter year>=2010]
    vllm-retrieval eval   --beir DIR [--split test] [--qrels FILE] [--modes dense hybrid]
    vllm-retrieval bench  encode|maxsim|search|scifact [ARGS...]

Every command takes the model and engine options (``--model``, prefixes, ``--max-length``,
``--dtype``, ``--engine-arg``, ``--base-url`` for a remote ``vllm serve`` with its key in
``$VLLM_API_KEY`` or ``--api-key-file``, never on the command line...). Results go to standard
output; vLLM's logs are off unless ``-v``, and go to standard error, so ``--json`` output can be
piped. Errors are one line on standard error (``vllm-retrieval: error: Type: message``; ``-v``
adds the traceback) and a non-zero exit status. Engine start is reported apart from the work.

One module per concern: :mod:`.app` (parser, entry points, output and error handling),
:mod:`.common` (the encoder and store from the options), :mod:`.inputs` (files to documents),
and one module per command: :mod:`.index`, :mod:`.search`, :mod:`.eval`, :mod:`.bench`.
Importing this package starts no engine and imports neither vLLM nor torch nor Qdrant.
"""

from .app import STEP_MARK, build_parser, console_main, main
from .inputs import chunk_text, read_inputs
from .search import parse_filters

__all__ = [
    "STEP_MARK",
    "build_parser",
    "chunk_text",
    "console_main",
    "main",
    "parse_filters",
    "read_inputs",
]
