"""The layout's rules, read from the source (ast): no import cycles, layers that only look
down, adapters on the public API only, and adapter settings that cannot drift from the core's.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import vllm_retrieval
from vllm_retrieval.encoding import ENCODER_FIELDS, EncoderSettings

ROOT = Path(vllm_retrieval.__file__).parent
PKG = "vllm_retrieval"
# What each part may import from the package (besides itself); nothing may import an adapter.
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "encoding": {"errors"},
    "scoring": {"errors", "encoding"},
    "store": {"errors", "encoding"},
    "evaluation": {"errors", "encoding", "store"},
    "cli": {"errors", "encoding", "scoring", "store", "evaluation", "__init__"},
    "langchain": {"errors", "encoding", "scoring", "store", "__init__"},
    "llama_index": {"errors", "encoding", "scoring", "store", "__init__"},
    "demo": {"errors", "encoding", "scoring", "store", "langchain", "llama_index", "__init__"},
    "__init__": {"errors", "encoding", "scoring", "store"},
}
PUBLIC_CORE = {PKG, *(f"{PKG}.{p}" for p in ("errors", "encoding", "scoring", "store"))}
ADAPTERS = ("langchain", "llama_index")
MAX_LINES = 620


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {
        _module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), str(p)))
        for p in sorted(ROOT.rglob("*.py"))
    }


MODULES = _modules()


def _imports(name: str, tree: ast.Module, is_pkg: bool) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import of the package's own modules (lazy ones too)."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == PKG]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != PKG:
                continue
            names = [a.name for a in node.names]
            # ``from pkg import submodule`` imports the submodule
            subs = [n for n in names if f"{target}.{n}" in MODULES]
            out += [(f"{target}.{n}", []) for n in subs]
            if node.module or node.level == 0:  # ``from . import x``: submodules only
                out.append((target, [n for n in names if n not in subs]))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, (path, tree) in MODULES.items():
        deps = {t for t, _ in _imports(name, tree, path.name == "__init__.py") if t in MODULES}
        graph[name] = deps - {name}
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_layout_is_by_concern() -> None:
    for package in ("encoding", "encoding.backends", "scoring", "store", "store.backends", "cli"):
        assert f"{PKG}.{package}" in MODULES, f"{package}/ is missing"
    assert not (ROOT / "core").exists(), "the flat core/ package is gone"
    for name, (path, _) in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concern"


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_layers_only_look_down() -> None:
    for name, deps in _graph().items():
        part = _part(name)
        allowed = LAYERS[part] | {part}
        for dep in deps:
            assert _part(dep) in allowed, f"{name} imports {dep}: {part} may use {sorted(allowed)}"


def _all(module: str) -> set[str]:
    _, tree = MODULES[module]
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return set()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_use_only_the_public_core_api(adapter: str) -> None:
    for name, (path, tree) in MODULES.items():
        if _part(name) != adapter:
            continue
        for target, names in _imports(name, tree, path.name == "__init__.py"):
            if _part(target) == adapter:
                continue
            assert target in PUBLIC_CORE, f"{name} imports the private module {target}"
            exported = _all(target)
            for n in names:
                assert n in exported, f"{name} imports {n} from {target}, which does not export it"


# -- one source for encoder settings ----------------------------------------------------------

# A valid non-default value for every Encoder setting; a new setting needs one here.
SAMPLES: dict[str, Any] = {
    "query_prefix": "q: ",
    "document_prefix": "d: ",
    "max_length": 100,
    "query_length": 16,
    "pooling": "cls",
    "profile": "sentence-transformers",
    "batch_size": 7,
    "show_progress": True,
    "dtype": "float32",
    "engine_kwargs": {"seed": 3},
    "base_url": "http://127.0.0.1:9",
    "api_key": "secret",
    "timeout": 5.0,
}


def _plain(value: Any) -> Any:
    """A setting's value, a secret revealed (keys are SecretStr, never shown in repr)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_every_setting_has_a_sample() -> None:
    assert set(SAMPLES) == set(ENCODER_FIELDS) - {"model"}


def test_langchain_embeddings_take_the_encoders_settings() -> None:
    pytest.importorskip("langchain_core")
    from vllm_retrieval.langchain import VLLMEmbeddings

    for name in ENCODER_FIELDS:
        mine, core = VLLMEmbeddings.model_fields[name], EncoderSettings.model_fields[name]
        assert (mine.annotation, mine.get_default()) == (core.annotation, core.get_default())
    for name, value in SAMPLES.items():  # every setting reaches the Encoder
        emb = VLLMEmbeddings(**{name: value})
        assert _plain(getattr(emb.core_encoder, name)) == value, name


def test_llama_index_embedding_takes_the_encoders_settings() -> None:
    pytest.importorskip("llama_index.core")
    from vllm_retrieval.llama_index import VLLMEmbedding
    from vllm_retrieval.llama_index.embeddings import LLAMA_INDEX_NAMES

    fields = VLLMEmbedding.model_fields
    for name in ENCODER_FIELDS:
        field = LLAMA_INDEX_NAMES.get(name, name)
        assert field in fields, f"VLLMEmbedding has no field for the Encoder setting {name}"
        if name != "model":
            core = EncoderSettings.model_fields[name]
            assert fields[field].annotation == core.annotation, name
            assert fields[field].get_default() == core.get_default(), name
    for name, value in SAMPLES.items():
        field = LLAMA_INDEX_NAMES.get(name, name)
        emb = VLLMEmbedding(**{field: value})
        assert _plain(getattr(emb.encoder, name)) == value, name
        assert _plain(getattr(emb, field)) == value, name
