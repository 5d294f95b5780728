"""No import cycles anywhere in tunesmith, counting function-local imports and imports of a
package's own `__init__` (which import-linter's acyclic_siblings contract does not see)."""

from __future__ import annotations

import graphlib

import pytest

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the test extra)")


def test_no_module_imports_itself_through_others():
    # As the contracts in pyproject.toml: `if TYPE_CHECKING:` imports never run.
    graph = grimp.build_graph("tunesmith", cache_dir=None, exclude_type_checking_imports=True)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    try:
        graphlib.TopologicalSorter(imports).prepare()
    except graphlib.CycleError as e:
        cycle = " -> ".join(reversed(e.args[1]))  # each module imports the next
        pytest.fail(f"import cycle: {cycle}; move the shared piece into a module both can import")


def test_the_check_sees_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def load():\n    from cyclic import store\n")
    (pkg / "store.py").write_text("from cyclic import __name__ as root\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", cache_dir=None)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(imports).prepare()
