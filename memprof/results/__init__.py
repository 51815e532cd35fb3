"""What every stage hands on: ``Result`` and ``ResultSet`` (versioned JSON, the seam between measuring
and reporting), what is profiled, each field declared once (``configuration``), the checks a file's
values pass (``schema``), atomic writes and strict reads (``files``), the step's compact timeline,
exact polynomials in b and s and the closed form built from them (``polynomial``, ``formula``), and
the names of modules and layer rows (``module_names``).

Nothing here runs a model or imports torch.
"""
