# focusgpt: `make train` and `make test` are the two commands (see README.md).
# Both install what is missing (Debian/Ubuntu packages through apt-get) before building.

CXX      ?= g++
CXXFLAGS ?= -O3 -march=native
CXXFLAGS += -DGIT_COMMIT=\"$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)\"
CXXFLAGS += -std=c++17 -fopenmp -Wall -Wextra -Wno-unused-parameter -MMD -MP
NVCC     ?= $(shell command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
NVCC_ARCHS = -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVCCFLAGS = -std=c++17 -O3 $(NVCC_ARCHS) -Xcompiler -fopenmp
PYTHON   ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
MAKEFLAGS += --jobs=$(shell nproc) --no-print-directory

BUILD := build
GPU_SOURCES := $(wildcard layers/*.h layers/*.cuh attention/*.h attention/*.cuh data/*.h)
TESTS := $(wildcard test/test_*.cpp)
TEST_OBJS := $(TESTS:test/%.cpp=$(BUILD)/test/%.o) $(BUILD)/test/main.o

.PHONY: all train test deps nvcc-check gpu-check kernel-resources clean
all: $(BUILD)/train_gpt_cpu $(BUILD)/eval_gpt $(BUILD)/prepare_data

# ---- dependencies -------------------------------------------------------------------------------
# Debian package -> a file that proves it is installed
DEPS = doctest-dev:/usr/include/doctest/doctest.h \
       nlohmann-json3-dev:/usr/include/nlohmann/json.hpp \
       libcli11-dev:/usr/include/CLI/CLI.hpp
deps:
	@missing=""; \
	for d in $(DEPS); do [ -e "$${d#*:}" ] || missing="$$missing $${d%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# python3-torch is only needed by the test suite's PyTorch cross-check
test-deps: deps
	@$(PYTHON) -c "import torch, numpy, matplotlib" 2>/dev/null || { \
	  echo "installing: python3-torch python3-numpy python3-matplotlib"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-torch python3-numpy python3-matplotlib >/dev/null; }

# ---- binaries -----------------------------------------------------------------------------------
# train_gpt_cpu is train_gpt.cu compiled as plain C++: the CPU trainer shares every line with the
# GPU trainer except the kernels.
$(BUILD)/train_gpt_cpu: train_gpt.cu | deps
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -x c++ $< -o $@

# train_gpt: the same train_gpt.cu compiled by nvcc, the GPU trainer (the model: layers/gpt.cuh), with
# NCCL for data parallel over several GPUs (layers/distributed.cuh). ptxas's report of every kernel's
# registers and spills goes to build/train_gpt.resources (its other messages to the terminal), for
# `make kernel-resources` (dev/kernel_resources.sh).
NCCL_LIB ?= /usr/local/cuda/lib64
PTXAS_INFO = grep -v -e '^ptxas info' -e 'bytes stack frame' $@.resources >&2
$(BUILD)/train_gpt: train_gpt.cu $(GPU_SOURCES) | deps
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -Xptxas -v -DGIT_COMMIT=\"$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)\" -x cu $< -o $@ -lcublasLt -lcublas -L$(NCCL_LIB) -lnccl 2> $@.resources || { $(PTXAS_INFO); exit 1; }
	@$(PTXAS_INFO) || true

# Registers per thread, spilled bytes and static shared memory of every kernel of train_gpt, per
# architecture (nvcc, no GPU; a spill is a kernel out of registers).
kernel-resources: $(BUILD)/train_gpt
	@bash dev/kernel_resources.sh $(BUILD)/train_gpt.resources

# eval_gpt: compiled by nvcc where nvcc is installed (it then runs on the GPU when there is one, on the
# CPU otherwise), as C++ elsewhere (the CPU only).
$(BUILD)/eval_gpt: eval_gpt.cu $(if $(NVCC),$(GPU_SOURCES)) | deps
	@mkdir -p $(@D)
	$(if $(NVCC),$(NVCC) $(NVCCFLAGS) -x cu $< -o $@ -lcublasLt -lcublas,$(CXX) $(CXXFLAGS) -x c++ $< -o $@)

$(BUILD)/prepare_data: data/prepare_data.cpp | deps
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $< -o $@

$(BUILD)/bench_tokenizer: dev/bench_tokenizer.cpp | deps
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $< -o $@

# Reference ids from js-tiktoken (an independent GPT-2 tokenizer, from npm) for test_tokenizer.cpp;
# without node and npm the cross-check is skipped.
.PHONY: tokenizer-reference
tokenizer-reference:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "node/npm not found: skipping the js-tiktoken cross-check"; \
	elif [ -d $(BUILD)/node_modules/js-tiktoken ] || \
	     npm install --prefix $(BUILD) --no-save --no-audit --no-fund --silent js-tiktoken@1.0.21; then \
	  node test/tokenizer_crosscheck.mjs $(BUILD) $(BUILD)/tokenizer_ref; \
	else echo "npm install js-tiktoken failed: skipping the js-tiktoken cross-check"; fi

$(BUILD)/test/%.o: test/%.cpp | deps
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -O2 -c $< -o $@

$(BUILD)/test_focus: $(TEST_OBJS)
	$(CXX) $(CXXFLAGS) $^ -o $@

# Compile every .cu file for sm_80 and sm_90; needs nvcc, not a GPU. (The trainer, the evaluator and the
# GPU tests are left out: `make test` builds them with nvcc anyway; so is test_memory_requests.cu, which
# reads the CPU emulation's counters.)
nvcc-check: | deps
	@if [ -z "$(NVCC)" ]; then echo "nvcc not found: skipping the CUDA compile check"; else \
	  mkdir -p $(BUILD)/nvcc && for f in $$(git ls-files '*.cu' ':!test/test_gpu*.cu' ':!train_gpt.cu' ':!eval_gpt.cu' \
	    ':!test/test_memory_requests.cu'); do \
	    echo "nvcc $$f (sm_80, sm_90)"; \
	    $(NVCC) $(NVCCFLAGS) -c $$f -o $(BUILD)/nvcc/$$(basename $$f .cu).o || exit 1; \
	  done; fi

# The GPU test binary (every CUDA kernel against its CPU reference, bf16 and an fp32 build for checking)
# and the benchmark. nvcc builds them; run without a GPU they print one "skipped" line and exit 0.
# (test_gpu_model.cu runs the data-parallel path on one rank, hence NCCL.)
GPU_TESTS := $(wildcard test/test_gpu*.cu)
$(BUILD)/test_gpu: $(GPU_TESTS) test/gpu_check.h $(GPU_SOURCES)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) $(GPU_TESTS) -o $@ -lcublasLt -lcublas -L$(NCCL_LIB) -lnccl
$(BUILD)/test_gpu_fp32: $(GPU_TESTS) test/gpu_check.h $(GPU_SOURCES)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -DFOCUS_FP32 $(GPU_TESTS) -o $@ -lcublasLt -lcublas -L$(NCCL_LIB) -lnccl
$(BUILD)/bench_gpu_layers: dev/bench_gpu_layers.cu dev/gpu_timing.cuh $(GPU_SOURCES)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) $< -o $@ -lcublasLt -lcublas

# On a GPU machine: build, test the layers and the model in both precisions, print the benchmark table,
# run the small GPU tests under compute-sanitizer (dev/sanitize.sh), train a small model 200 steps per
# attention variant with train_gpt and print loss, tokens/s and memory (dev/gpu_train_check.sh), then
# check the NCCL collectives (distributed-check, seconds on one GPU).
# All run even when one fails, and the status says whether any did; no usable GPU is a failure here.
# `make gpu-binaries` builds what it runs without running it (on a device lease with a per-call time
# limit, the build can be one call and the check the next: the build outputs stay); dev/gpu_check.sh runs
# the checks on binaries already built, so they can also be built elsewhere and carried to the GPU.
GPU_BINARIES := test_gpu test_gpu_fp32 bench_gpu_layers train_gpt train_gpt_cpu eval_gpt bench_allreduce
.PHONY: gpu-binaries
gpu-binaries:
	@$(MAKE) $(addprefix $(BUILD)/,$(GPU_BINARIES))
gpu-check: gpu-binaries
	bash dev/gpu_check.sh $(BUILD)

# ---- the CUDA code on the CPU (dev/cuda_emulation/) ---------------------------------------------
# Without a GPU: the GPU test binary built by g++ against dev/cuda_emulation/cuda_emulation.h (kernels run
# as fibers on the CPU; the runtime, cuBLASLt and one-rank NCCL emulated; what it checks and what it cannot:
# the top of cuda_emulation.h) and run on its small shapes in bf16 and fp32. Needs the CUDA headers (next to
# nvcc), not a GPU. The sources are preprocessed into $(BUILD)/emulation/ first (launches and __shared__
# are not C++); build/train_gpt_emulated and build/eval_gpt_emulated are the GPU trainer and evaluator
# built the same way, which test/test_emulated_programs.sh compares with train_gpt_cpu and eval_gpt
# --device cpu. build/test_gpu_racecheck and build/test_gpu_fp32_racecheck are the GPU tests again with
# every access to shared and device memory checked for races (dev/cuda_emulation/race_detection.cpp),
# after build/test_race_detection has shown the detector finding known races (and build/test_memory_requests
# the costs `make memory-requests` reports right on known access patterns). `make test` runs it all, so
# every kernel's indexing, barriers, races and bounds and the GPU programs' wiring are exercised on machines
# without a GPU (about 6 minutes on two cores, the builds done).
# nvcc may be a wrapper script (CI's /usr/local/bin/nvcc), so ask it where its toolkit is (TOP).
ifndef CUDA_INCLUDE
CUDA_INCLUDE := $(if $(NVCC),$(shell $(NVCC) --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^\#\$$ TOP=//p')/include)
endif
EMULATION := dev/cuda_emulation
EMULATED := $(BUILD)/emulation
EMULATION_FLAGS = -std=c++17 -O2 -fopenmp -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -I$(CUDA_INCLUDE)
EMULATED_SOURCES := $(wildcard layers/* attention/* data/*.h test/*.h test/test_gpu*.cu) test/test_race_detection.cu \
  test/test_memory_requests.cu \
  train_gpt.cu eval_gpt.cu
EMULATED_TESTS := $(GPU_TESTS:%.cu=%)

$(EMULATED)/sources.stamp: $(EMULATED_SOURCES) $(EMULATION)/preprocess.py
	@mkdir -p $(@D)
	$(PYTHON) $(EMULATION)/preprocess.py --out $(EMULATED) $(EMULATED_SOURCES)
	@touch $@
$(EMULATED)/runtime.o: $(EMULATION)/cuda_emulation_runtime.cpp $(EMULATION)/cuda_emulation.h
	@mkdir -p $(@D)
	$(CXX) $(EMULATION_FLAGS) -c $< -o $@
$(EMULATED)/%.o: $(EMULATION)/%.cpp $(EMULATION)/cuda_emulation.h
	@mkdir -p $(@D)
	$(CXX) $(EMULATION_FLAGS) -c $< -o $@
EMULATION_RUNTIME := $(EMULATED)/runtime.o $(EMULATED)/race_detection.o $(EMULATED)/memory_requests.o
# $(EMULATED)/VARIANT/X.o from the preprocessed X.cu, VARIANT one of bf16, fp32 and, for race detection
# (dev/cuda_emulation/race_detection.cpp), racecheck and racecheck_fp32: every memory access instrumented
# by -fsanitize=thread, whose calls the emulator implements itself (no libtsan), -g for the source lines
# of a race.
RACECHECK_FLAGS := -g -fsanitize=thread --param=tsan-instrument-func-entry-exit=0
VARIANT_FLAGS_bf16 := -DGIT_COMMIT=\"emulated\"
VARIANT_FLAGS_fp32 := -DFOCUS_FP32
VARIANT_FLAGS_racecheck := $(RACECHECK_FLAGS)
VARIANT_FLAGS_racecheck_fp32 := $(RACECHECK_FLAGS) -DFOCUS_FP32
define emulated_variant
$(EMULATED)/$(1)/%.o: $(EMULATED)/sources.stamp $(EMULATION)/cuda_emulation.h | deps
	@mkdir -p $$(@D)
	$(CXX) $(EMULATION_FLAGS) $(VARIANT_FLAGS_$(1)) -include $(EMULATION)/cuda_emulation.h -x c++ -c $(EMULATED)/$$*.cu -o $$@
endef
$(foreach variant,bf16 fp32 racecheck racecheck_fp32,$(eval $(call emulated_variant,$(variant))))
$(BUILD)/test_gpu_emulated: $(EMULATION_RUNTIME) $(EMULATED_TESTS:%=$(EMULATED)/bf16/%.o)
	$(CXX) -fopenmp $^ -o $@
$(BUILD)/test_gpu_fp32_emulated: $(EMULATION_RUNTIME) $(EMULATED_TESTS:%=$(EMULATED)/fp32/%.o)
	$(CXX) -fopenmp $^ -o $@
$(BUILD)/test_gpu_racecheck: $(EMULATION_RUNTIME) $(EMULATED_TESTS:%=$(EMULATED)/racecheck/%.o)
	$(CXX) -fopenmp $^ -o $@
$(BUILD)/test_gpu_fp32_racecheck: $(EMULATION_RUNTIME) $(EMULATED_TESTS:%=$(EMULATED)/racecheck_fp32/%.o)
	$(CXX) -fopenmp $^ -o $@
$(BUILD)/test_race_detection: $(EMULATION_RUNTIME) $(EMULATED)/racecheck/test/test_race_detection.o
	$(CXX) -fopenmp $^ -o $@
$(BUILD)/test_memory_requests: $(EMULATION_RUNTIME) $(EMULATED)/racecheck/test/test_memory_requests.o
	$(CXX) -fopenmp $^ -o $@
$(BUILD)/train_gpt_emulated: $(EMULATION_RUNTIME) $(EMULATED)/bf16/train_gpt.o
	$(CXX) -fopenmp $^ -o $@
$(BUILD)/eval_gpt_emulated: $(EMULATION_RUNTIME) $(EMULATED)/bf16/eval_gpt.o
	$(CXX) -fopenmp $^ -o $@

.PHONY: emulate-check
emulate-check:
	@if [ -z "$(CUDA_INCLUDE)" ]; then echo "CUDA headers not found (no nvcc): skipping the emulated GPU tests"; else \
	  $(MAKE) $(BUILD)/test_gpu_emulated $(BUILD)/test_gpu_fp32_emulated $(BUILD)/train_gpt_emulated \
	    $(BUILD)/eval_gpt_emulated $(BUILD)/train_gpt_cpu $(BUILD)/eval_gpt $(BUILD)/test_race_detection \
	    $(BUILD)/test_memory_requests $(BUILD)/test_gpu_racecheck $(BUILD)/test_gpu_fp32_racecheck || exit 1; status=0; \
	  ./$(BUILD)/test_gpu_emulated --small || status=1; ./$(BUILD)/test_gpu_fp32_emulated --small || status=1; \
	  echo "again with each block's threads in reverse order (a missing barrier then changes results):"; \
	  if CUDA_EMULATION_ORDER=reverse ./$(BUILD)/test_gpu_emulated --small > $(BUILD)/emulated_reverse.log 2>&1; \
	  then tail -1 $(BUILD)/emulated_reverse.log; else cat $(BUILD)/emulated_reverse.log; status=1; fi; \
	  echo "the race detector on kernels with known races (threads in order, then reversed), then on every kernel"; \
	  echo "of the GPU tests (bf16 and fp32 at once: each runs its blocks one at a time):"; \
	  { ./$(BUILD)/test_race_detection && CUDA_EMULATION_ORDER=reverse ./$(BUILD)/test_race_detection; } \
	    > $(BUILD)/race_detection.log 2>&1; detector=$$?; \
	  ./$(BUILD)/test_memory_requests > $(BUILD)/memory_requests_test.log 2>&1; requests=$$?; \
	  ./$(BUILD)/test_gpu_racecheck --small > $(BUILD)/racecheck_bf16.log 2>&1 & \
	  ./$(BUILD)/test_gpu_fp32_racecheck --small > $(BUILD)/racecheck_fp32.log 2>&1; fp32=$$?; wait $$!; bf16=$$?; \
	  for result in "$$detector race_detection" "$$requests memory_requests_test" "$$bf16 racecheck_bf16" "$$fp32 racecheck_fp32"; do \
	    set -- $$result; if [ $$1 = 0 ]; then echo "$$2: $$(tail -1 $(BUILD)/$$2.log)"; \
	    else cat $(BUILD)/$$2.log; status=1; fi; done; \
	  bash test/test_emulated_programs.sh $(BUILD) || status=1; \
	  exit $$status; fi

# What the memory requests of every kernel the GPU tests' small shapes run would cost a GPU, per source
# line: shared-memory bank conflicts and device-memory sectors, counted in CPU emulation
# (dev/cuda_emulation/memory_requests.cpp; about four minutes on two cores).
.PHONY: memory-requests
memory-requests: $(BUILD)/test_gpu_racecheck
	@CUDA_EMULATION_REQUESTS=1 ./$(BUILD)/test_gpu_racecheck --small > $(BUILD)/memory_requests.log 2>&1 || \
	  { cat $(BUILD)/memory_requests.log; exit 1; }
	@sed -n '/^memory requests of the kernels/,$$p' $(BUILD)/memory_requests.log

# ---- commands -----------------------------------------------------------------------------------
# The GPU trainer when nvcc is installed and a GPU answers nvidia-smi, else the CPU reference trainer.
ARGS ?= --out $(BUILD)/run --log $(BUILD)/run/log.jsonl
TRAINER := $(if $(and $(NVCC),$(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)),train_gpt,train_gpt_cpu)
train: $(BUILD)/$(TRAINER)
	./$(BUILD)/$(TRAINER) $(ARGS)

test: test-deps
	@$(MAKE) $(BUILD)/test_focus $(BUILD)/train_gpt_cpu $(BUILD)/eval_gpt $(BUILD)/prepare_data nvcc-check tokenizer-reference \
	  $(if $(NVCC),$(BUILD)/test_gpu $(BUILD)/train_gpt)
	$(PYTHON) test/torch_reference.py $(BUILD)/torch_ref
	./$(BUILD)/test_focus
	bash test/test_cli.sh $(BUILD)
	bash test/test_plot.sh
	bash test/test_kernel_resources.sh
	bash test/test_gpu_check.sh
	$(if $(NVCC),./$(BUILD)/test_gpu,@echo "nvcc not found: skipping the GPU tests")
	$(if $(NVCC),@bash dev/kernel_resources.sh --spills $(BUILD)/train_gpt.resources)
	@$(MAKE) emulate-check

clean:
	rm -rf $(BUILD)

# The NCCL bandwidth benchmark (dev/bench_allreduce.cu, which nvcc-check compiles in `make test`): on one
# GPU build/bench_allreduce, on several scripts/launch_single_node.sh N build/bench_allreduce.
$(BUILD)/bench_allreduce: dev/bench_allreduce.cu dev/gpu_timing.cuh $(GPU_SOURCES) | deps
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) $< -o $@ -L$(NCCL_LIB) -lnccl

# On a GPU machine: the NCCL path of data-parallel training on one rank, then over every GPU of this node
# (each collective's result checked, then timed; see dev/DISTRIBUTED.md), then with 2 or more GPUs
# train_gpt over all of them against one (dev/distributed_train_check.sh).
.PHONY: distributed-check
distributed-check: $(BUILD)/bench_allreduce $(BUILD)/train_gpt
	bash dev/gpu_check.sh $(BUILD) distributed

-include $(wildcard $(BUILD)/test/*.d $(BUILD)/*.d)
