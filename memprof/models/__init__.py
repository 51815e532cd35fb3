"""What is fine-tuned: the built-in backbones (hyper-parameters only; ``backbones``), the task heads
and their batches (``tasks``) and the step's loss, full or chunked (``losses``)."""
