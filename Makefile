# Shortcuts; each target is one command you can also type yourself.
PYTHON ?= python

.PHONY: check-gpu gpu-suite

# What will this machine do? torch/CUDA, GPUs, native bf16, torch.compile, NCCL, auto choices.
check-gpu:
	$(PYTHON) -m src.training.gpu_check

# Verify and measure a GPU within a time budget (docs: development/benchmarks.md).
# Extra flags: make gpu-suite ARGS="--budget 300 --resume"
gpu-suite:
	$(PYTHON) benchmarks/gpu_suite.py $(ARGS)
