"""zoo.analysis, the notebooks' shared code: breakdowns add up, table rows say what the configs say, the block
diagram follows the knobs, scale() checks its variable, and `import zoo` does not pull in matplotlib."""

import subprocess
import sys

import matplotlib
import pytest

from zoo import analysis, block_diagram, count_params, get_config, list_presets

matplotlib.use("Agg")


@pytest.mark.parametrize(
    "name", ["gpt2", "t5-small", "transformer-base", "gemma2-2b", "olmo2-7b", "palm-540b", "deepseek-v3-tiny"]
)
def test_breakdown_sums_to_count_params(name):
    cfg = get_config(name)
    assert sum(analysis.param_breakdown(cfg).values()) == count_params(cfg)


def test_breakdown_of_llama2_7b_by_hand():
    d, layers, ff, vocab = 4096, 32, 11008, 32000
    assert analysis.param_breakdown(get_config("llama2-7b")) == {
        "embeddings": 2 * vocab * d,  # untied: token embedding + output head
        "attention": layers * 4 * d * d,
        "mlp": layers * 3 * d * ff,  # SwiGLU: three matrices
        "norms": (2 * layers + 1) * d,
        "other": 0,
    }


def test_t5_relative_bias_tables_are_other():
    assert analysis.param_breakdown(get_config("t5-small"))["other"] == 2 * 32 * 8  # one table per stack


def test_row_of_llama2_7b():
    row = analysis.architecture_row("llama2-7b")
    assert (row["norm"], row["norm position"], row["activation"], row["positions"]) == (
        "rmsnorm",
        "pre",
        "swiglu",
        "rope",
    )
    assert row["d_ff/d_model"] == 11008 / 4096
    assert row["heads*head_dim/d_model"] == 1.0 and row["d_model/layers"] == 4096 / 32
    assert (row["GLU"], row["parallel"], row["tied"], row["bias"], row["kind"]) == (True, False, False, False, "MHA")
    assert row["params"] == count_params(get_config("llama2-7b")) and row["published"] == 7e9
    assert 1.0 < row["FLOPs/6N"] < 1.1  # 6N plus the attention term at 2048 tokens


def test_rows_follow_the_knobs():
    palm, gemma, olmo = (analysis.architecture_row(n) for n in ("palm-540b", "gemma2-9b", "olmo2-7b"))
    vaswani, gpt2 = analysis.architecture_row("transformer-base"), analysis.architecture_row("gpt2")
    assert palm["parallel"] and palm["kind"] == "MQA" and palm["d_ff/d_model"] == 4.0
    assert (gemma["norm position"], gemma["activation"], gemma["kind"]) == ("double", "geglu", "GQA")
    assert gemma["tricks"] == "attn soft-cap 50, logit soft-cap 30"
    assert gemma["attention"] == "local/global (window 4096)"
    assert olmo["norm position"] == "output" and olmo["tricks"] == "z-loss 1e-05, qk-norm (full)"
    assert (vaswani["norm position"], vaswani["activation"], vaswani["positions"]) == ("post", "relu", "sinusoidal")
    assert (gpt2["norm"], gpt2["activation"], gpt2["GLU"], gpt2["bias"]) == ("layernorm", "gelu_tanh", False, True)


def test_published_counts_read_the_presets_labels():
    assert analysis.published_count("llama2-70b") == 70e9 and analysis.published_count("gpt2") == 117e6
    assert analysis.published_count("t5-v1_1-small") == 77e6 and analysis.published_count("llama-tiny") is None
    assert all(analysis.published_count(n) for n in list_presets() if not n.endswith("-tiny"))


def test_markdown_table_formats_counts_and_ratios():
    row = {
        "preset": "x",
        "params": 6_738_415_616,
        "ratio": 2.6875,
        "one": 1.0003,
        "aspect": 100.2,
        "flops": 2467.9,
        "vocab": 32000,
        "GLU": True,
        "published": None,
    }
    assert analysis.markdown_table([row], list(row)).splitlines() == [
        "| preset | params | ratio | one | aspect | flops | vocab | GLU | published |",
        "|" + "---|" * 9,
        "| x | 6.74B | 2.69 | 1.00 | 100 | 2,468 | 32,000 | yes | – |",
    ]


def test_param_tree_lists_every_leaf_with_its_logical_axes():
    cfg = get_config("llama-tiny")
    tree = analysis.param_tree(cfg)
    leaves = [line for line in tree.splitlines() if not line.endswith("/")]
    assert len(leaves) == 12  # q, k, v, o, 3 MLP matrices, 2 block norms, final norm, embedding, head
    assert any(line.startswith("token_embed/embedding") and "vocab, embed" in line for line in leaves)
    assert sum(int(line.split()[-1].replace(",", "")) for line in leaves) == count_params(cfg)


def test_scale_reads_the_environment(monkeypatch):
    monkeypatch.delenv("ZOO_NOTEBOOK_SCALE", raising=False)
    assert analysis.scale() == "laptop"
    for value in analysis.SCALES:
        monkeypatch.setenv("ZOO_NOTEBOOK_SCALE", value)
        assert analysis.scale() == value
    monkeypatch.setenv("ZOO_NOTEBOOK_SCALE", "huge")
    with pytest.raises(ValueError, match="ZOO_NOTEBOOK_SCALE='huge': allowed values are ci, laptop, accelerator"):
        analysis.scale()


def test_save_figure_writes_only_outside_ci(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    fig = plt.figure()
    monkeypatch.setenv("ZOO_NOTEBOOK_SCALE", "ci")
    assert analysis.save_figure(fig, "x") is None and not (tmp_path / "figures").exists()
    monkeypatch.setenv("ZOO_NOTEBOOK_SCALE", "laptop")
    assert analysis.save_figure(fig, "x").read_bytes()[:4] == b"\x89PNG"
    plt.close(fig)


def _kinds(sublayer):
    return [[kind for kind, _ in boxes] for boxes in (sublayer["shared"], *sublayer["branches"], sublayer["after"])]


def test_block_layout_follows_norm_position_and_parallel_layers():
    gpt2, gemma, palm, vaswani = (
        block_diagram.block_layout(get_config(n)) for n in ("gpt2", "gemma2-9b", "palm-540b", "transformer-base")
    )
    assert [_kinds(s) for s in gpt2] == [[[], ["norm", "attention"], []], [[], ["norm", "mlp"], []]]
    assert [_kinds(s) for s in gemma] == [[[], ["norm", "attention", "norm"], []], [[], ["norm", "mlp", "norm"], []]]
    assert [_kinds(s) for s in palm] == [[["norm"], ["attention"], ["mlp"], []]]
    assert [_kinds(s) for s in vaswani] == [[[], [core], ["norm"]] for core in ("attention", "attention", "mlp")]
    assert "Cross-attention" in vaswani[1]["branches"][0][0][1]
    assert "soft-cap 50" in gemma[0]["branches"][0][1][1] and "MQA" in palm[0]["branches"][0][0][1]
    olmo = block_diagram.block_layout(get_config("olmo2-7b"))
    assert [_kinds(s) for s in olmo] == [[[], ["attention", "norm"], []], [[], ["mlp", "norm"], []]]


def test_draw_blocks_draws_every_family():
    import matplotlib.pyplot as plt

    names = ["transformer-base", "gpt2", "t5-v1_1-small", "llama3-8b", "palm-8b", "gemma2-2b", "olmo2-1b", "gpt3-small"]
    fig = block_diagram.draw_blocks(names)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == names
    assert all(len(ax.patches) > 5 for ax in fig.axes)
    plt.close(fig)


def test_import_zoo_does_not_import_matplotlib():
    code = "import sys, zoo, zoo.analysis; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
