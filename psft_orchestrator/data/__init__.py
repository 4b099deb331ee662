"""Data: row formats and conversion (formats.py), answer checking with Math-Verify (answers.py,
shared by the filter stage, the math suite and the GRPO reward), the filter stage (filter.py) and
the toy world (toy/)."""
