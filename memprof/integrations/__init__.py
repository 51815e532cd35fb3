"""memprof inside other libraries' training loops: ``transformers`` (``MemprofCallback`` for
``transformers.Trainer``). Each module imports its library; import the one you use."""
