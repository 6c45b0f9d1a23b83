"""What every other part leans on: the project's exceptions, the user's configuration
(pydantic models read from TOML), crash points for fault-injection tests, and atomic writes.

May import the standard library, pydantic and rich only; imports nothing else of `pipeline`."""
