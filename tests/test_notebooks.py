"""Every notebook runs top to bottom in a fresh Jupyter kernel at ZOO_NOTEBOOK_SCALE=ci (nbclient); an error in
any cell fails the test with that cell's traceback. Needs the notebooks extra: pip install -e ".[notebooks]"."""

import importlib.util
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
NEEDED = ("nbclient", "nbformat", "ipykernel", "matplotlib")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"running the notebooks needs {', '.join(missing)}: pip install -e '.[notebooks]'", pytrace=False)
    import nbclient
    import nbformat

    monkeypatch.setenv("ZOO_NOTEBOOK_SCALE", "ci")  # the kernel inherits this process's environment
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
