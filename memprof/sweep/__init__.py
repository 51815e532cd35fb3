"""``memprof compare``'s sweep: the grid of configurations (``grid``), the run that profiles each and
writes results and reports (``run``), worker processes (``workers``), what a resume must find
unchanged (``resume``) and ``compare``'s closed form with one check profile per method
(``closed_form``)."""
