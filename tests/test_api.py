"""The Python API that the CLI is a thin layer over."""

import subprocess
import sys

import tunesmith


def test_every_exported_name_resolves():
    for name in tunesmith.__all__:
        assert getattr(tunesmith, name) is not None, name


def test_load_once_generate_many(tiny_model_dir):
    gen = tunesmith.load(str(tiny_model_dir), device="cpu")
    config = tunesmith.GenerationConfig(length=5, seed=1)
    first = gen.generate("Hi", num_samples=2, config=config)
    assert [s.text for s in first] == [s.text for s in gen.generate("Hi", 2, config)]
    assert "".join(gen.stream("Hi", config)) == first[0].text


def test_import_does_not_load_torch():
    code = "import sys, tunesmith, tunesmith.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_editors_see_every_lazy_export():
    """Each lazily loaded name is also imported, from the same module, under TYPE_CHECKING."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(tunesmith.__file__).read_text())
    guarded = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    )
    seen = {a.name: n.module for n in guarded.body for a in n.names}
    assert seen == tunesmith._EXPORTS
    assert sorted(tunesmith.__all__) == sorted(["load", *tunesmith._EXPORTS])
