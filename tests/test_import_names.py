"""Our import names shadow nobody's: the fix for transformers importing our `kernels`.

Oracle: the installed distributions' own metadata (importlib.metadata.packages_distributions),
which lists for every top-level import name the distributions that provide it. Checked from the
repository root, where `python -m pytest` puts the root on sys.path.
"""
import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUR_DISTRIBUTION = "llm-playground"


def _root_import_names() -> set[str]:
    """Top-level names importable as regular modules or packages from the repository root."""
    names = {p.stem for p in ROOT.glob("*.py")}
    names |= {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return names


def test_only_one_import_package_at_the_root():
    assert _root_import_names() == {"llm_playground"}


def test_no_import_name_of_ours_is_provided_by_another_distribution():
    provided = importlib.metadata.packages_distributions()
    ours = _root_import_names() | {n for n, dists in provided.items() if OUR_DISTRIBUTION in dists}
    assert "llm_playground" in ours
    clashes = {n: sorted(set(provided[n]) - {OUR_DISTRIBUTION}) for n in ours
               if set(provided.get(n, ())) - {OUR_DISTRIBUTION}}
    assert not clashes, f"import names also provided by other distributions: {clashes}"


@pytest.mark.parametrize("name", ["kernels", "model", "bpe", "playground"])
def test_bare_part_names_do_not_resolve_to_a_root_folder(name):
    """`import kernels` from the root must give Hugging Face's package (or nothing), never ours."""
    spec = importlib.util.find_spec(name)
    places = [] if spec is None else (
        ([spec.origin] if spec.origin else []) + list(spec.submodule_search_locations or []))
    ours = [p for p in places if Path(p).resolve().is_relative_to(ROOT / name)]
    assert not ours, f"`import {name}` finds the repository's folder: {spec}"
    assert not (ROOT / name).exists(), f"a root folder named {name!r} is importable as a namespace"


def test_transformers_imports_from_the_repository_root():
    """The failure the issue reported: `cannot import name 'CUDAProperties' from 'kernels'`."""
    code = "from transformers import LlamaForCausalLM; print(LlamaForCausalLM.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "LlamaForCausalLM"


def test_console_scripts_point_into_the_package():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
           if ep.dist is not None and ep.dist.name == OUR_DISTRIBUTION}
    assert eps == {"playground": "llm_playground.playground.cli:main",
                   "bpe": "llm_playground.bpe.cli:main"}
    for value in eps.values():
        module, _, attr = value.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
