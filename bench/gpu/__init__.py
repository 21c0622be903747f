"""The pieces of the one-GPU acceptance check (bench/gpu_check.py is its entry point), one concept per module:

- plan.py: what the check runs (the job commands and their --set overrides), derived from a work directory
- table.py: a result row and the one printed table
- runner.py: running one job as a subprocess under the shared time budget
- parity.py: the hardware row and fp32 GPU-vs-CPU parity of the BASE model
- readback.py: what a finished job left behind (corpus clip lengths, the MLflow run and its metric history)
- check.py: the sequence of checks, each adding its rows
"""
