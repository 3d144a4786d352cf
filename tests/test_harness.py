"""zoo.harness: lm-evaluation-harness's LM interface over a zoo model. Its log-likelihoods equal a direct
computation with the model, and lm_eval drives it offline on a small task shipped in tests/data/harness."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")  # the [eval] extra; .ci/run installs it, so CI never skips this

from lm_eval.api.instance import Instance  # noqa: E402
from test_train import run  # noqa: E402

from zoo.harness import ZooLM  # noqa: E402

TASKS = Path(__file__).parent / "data" / "harness"


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("harness") / "run"
    run(directory, "run.steps=20")
    return ZooLM.from_run(str(directory), batch_size=4)


def direct_logprob(lm, context_ids, continuation_ids) -> tuple[float, bool]:
    ids = np.asarray(context_ids + continuation_ids)
    logits = np.asarray(lm.model.apply({"params": lm.params}, jnp.asarray(ids[None, :-1])), np.float64)[0]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    positions = np.arange(len(context_ids) - 1, len(ids) - 1)
    targets = ids[len(context_ids) :]
    return logp[positions, targets].sum(), bool((logits[positions].argmax(-1) == targets).all())


def request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_loglikelihood_equals_a_direct_computation(lm):
    pairs = [("def add(a, b):\n    return", " a + b"), ("", "import os"), ("x = 1\n" * 30, "y = 2")]
    scores = lm.loglikelihood([request("loglikelihood", c, t) for c, t in pairs])
    for (context, continuation), (score, greedy) in zip(pairs, scores, strict=True):
        tok = lm.tokenizer
        expected, expected_greedy = direct_logprob(lm, [tok.eos_id] + tok.encode(context), tok.encode(continuation))
        assert score == pytest.approx(expected, abs=1e-4) and greedy == expected_greedy


def test_rolling_loglikelihood_equals_a_direct_computation(lm):
    """A text longer than the model's 256 positions: the sum over lm-eval's disjoint windows, each scored
    directly; a short text: its log-likelihood after EOS."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    tok = lm.tokenizer
    short, long = "def f(x):\n    return x * 2\n", "def f(x):\n    return x * 2\n" * 20
    scores = lm.loglikelihood_rolling([request("loglikelihood_rolling", t) for t in (short, long)])
    assert scores[0] == pytest.approx(direct_logprob(lm, [tok.eos_id], tok.encode(short))[0], abs=1e-4)
    windows = [
        make_disjoint_window(w)
        for w in get_rolling_token_windows(
            tok.encode(long), prefix_token=tok.eos_id, max_seq_len=lm.max_length, context_len=1
        )
    ]
    assert len(windows) > 1
    assert scores[1] == pytest.approx(sum(direct_logprob(lm, list(c), list(t))[0] for c, t in windows), abs=1e-3)


def test_generate_until_stops_at_the_stop_string(lm):
    (text,) = lm.generate_until([request("generate_until", "def ", {"until": ["\n"], "max_gen_toks": 30})])
    assert "\n" not in text and len(text) <= 30


def test_lm_eval_drives_the_model_offline(lm, monkeypatch):
    monkeypatch.chdir(TASKS)  # the task's data_files path is relative to this directory
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["zoo_choice"],
        task_manager=TaskManager(include_path=str(TASKS)),
        log_samples=False,
        bootstrap_iters=0,
    )
    acc = results["results"]["zoo_choice"]["acc,none"]
    # The same accuracy computed here: the choice with the highest log-likelihood, per question.
    correct = []
    for line in (TASKS / "zoo_choice.jsonl").read_text().splitlines():
        doc = json.loads(line)
        scores = lm.loglikelihood([request("loglikelihood", doc["question"], c) for c in doc["choices"]])
        correct.append(int(np.argmax([s for s, _ in scores])) == doc["answer"])
    assert acc == pytest.approx(np.mean(correct))
