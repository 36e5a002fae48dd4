"""The step-by-step notebook runs top to bottom, and is committed without outputs."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

nbformat = pytest.importorskip(
    "nbformat", reason="the notebook tests need nbformat (requirements-test.txt)"
)
nbclient = pytest.importorskip(
    "nbclient", reason="the notebook tests need nbclient (requirements-test.txt)"
)

NOTEBOOK = ROOT / "notebooks" / "vit_step_by_step.ipynb"


def test_the_committed_notebook_carries_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_offline():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    text = "".join(output.get("text", "") for output in outputs)
    for check in (
        "conv == unfold + matmul: yes",
        "src.model.vit.Attention == the hand computation: yes",
        "largest logit difference from timm",
        "best val acc",
    ):
        assert check in text
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(figures) == 5  # patches, position table, curves, attention, position similarity
