"""Coverage-guided fuzz harnesses (atheris); see fuzz_wire.py."""
