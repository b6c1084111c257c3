"""Contract suites: one suite per port, run on the real adapter and its ``etrans dev`` stand-in
(and on the in-memory fake of ``tests/unit`` where that is cheap)."""
