"""A memory budget in your own tests: the training step of your model must fit the bytes you allow.

    cd examples/pytest_budget && python -m pytest -q

``memprof_budget`` (memprof's pytest plugin) measures the block as ``memprof.track`` does and fails
the test with one line per metric over its budget; the measurement is attached to the test report
(``--junitxml``). Budgets are bytes or sizes such as ``"2 MiB"``, per ``memprof.Memory`` field.
"""

import pytest
import torch
import transformers as tf

import meft


def small_model():
    """A 2-layer BERT from its config (random weights): the shape of your model, at a test's size."""
    torch.manual_seed(0)
    config = tf.BertConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=2,
    )
    return tf.BertForSequenceClassification(config)


def batch():
    ids = torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(0))  # (B, T)
    return {"input_ids": ids, "labels": torch.arange(8) % 2}


def test_the_meft_step_fits_its_budget(memprof_budget):
    model = meft.get_meft_model(small_model(), meft.MEFTConfig(variant="meft1", adapter_dim=8))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with memprof_budget(model, optimizer, saved_activations="1.5 MiB", peak="4 MiB") as prof:
        model(**batch()).loss.backward()
        optimizer.step()
    print(prof.result.memory)  # every figure, in bytes (shown with pytest -s)


def test_full_fine_tuning_does_not_fit_the_meft_budget(memprof_budget):
    """What a failing budget looks like: full fine-tuning saves about twice MEFT's activations here.
    (Your own budget tests have no pytest.raises: the failure is the point of the test.)"""
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(pytest.fail.Exception, match="saved_activations over budget"):
        with memprof_budget(model, optimizer, saved_activations="1.5 MiB", peak="4 MiB"):
            model(**batch()).loss.backward()
            optimizer.step()
