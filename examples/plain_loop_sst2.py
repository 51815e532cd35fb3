"""Fine-tune all-MiniLM-L6-v2 on SST-2 with MEFT in a plain PyTorch loop: measure the first step with
``memprof.track``, save the adapters and the optimizer halfway, and resume from them.

    python examples/plain_loop_sst2.py                              # 250 steps, 2,000 sentences
    python examples/plain_loop_sst2.py --max-steps 4 --train-size 64 --eval-size 16   # a smoke run

What a resume needs is what trains (``model.save_pretrained``: the adapters and the head, no frozen
weight), the optimizer's state, the step and the RNG state; the loop saves and restores all four.
"""

from __future__ import annotations

import torch
from sst2_common import arguments, data, meft_model

import meft
import memprof


def evaluate(model, dev) -> float:
    model.eval()
    with torch.no_grad():
        batch = dev[:]  # every row: a dict of (N, T) tensors
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.train()
    return float((logits.argmax(-1) == batch["labels"]).float().mean())


def train(args, train_data, model, optimizer, start: int, stop: int) -> list[float]:
    """Steps ``start`` + 1 ... ``stop``; the batches are drawn by a generator seeded per step, so a
    resumed run draws the same ones."""
    losses = []
    for step in range(start, stop):
        order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(step))
        batch = train_data[order[: args.batch_size]]
        if step == 0:  # the first step, where AdamW creates its state
            with memprof.track(model, optimizer, name="all-MiniLM-L6-v2") as prof:
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
            memory = prof.result.memory
            print(f"step 1: saved activations {memory.saved_activations:,d} B, peak {memory.peak:,d} B")
        else:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def save(folder, model, optimizer, step: int) -> None:
    model.save_pretrained(folder)  # the adapters and the head, with their MEFTConfig
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "rng": torch.get_rng_state()}, folder / "state.pt")


def resume(args, folder):
    """A fresh process: the pretrained model again, the saved adapters, the optimizer and RNG state."""
    model = meft_model(args)
    model.unload()  # from_pretrained converts the model itself, with the saved MEFTConfig
    model = meft.MEFTModel.from_pretrained(model, folder, is_trainable=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    state = torch.load(folder / "state.pt", weights_only=True)  # tensors, numbers and dicts: no pickled code
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return model, optimizer, state["step"]


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    train_data, dev = data(args)
    half = max(args.max_steps // 2, 1)

    torch.manual_seed(0)  # dropout
    model = meft_model(args)
    model.print_trainable_parameters()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    losses = train(args, train_data, model, optimizer, 0, half)
    folder = args.out / f"checkpoint-{half}"
    save(folder, model, optimizer, half)

    model, optimizer, step = resume(args, folder)
    losses += train(args, train_data, model, optimizer, step, args.max_steps)
    print(f"resumed at step {step}, ended at step {args.max_steps}; losses {[round(x, 4) for x in losses]}")
    model.save_pretrained(args.out / "final")
    print(f"dev accuracy: {evaluate(model, dev):.3f}")


if __name__ == "__main__":
    main()
